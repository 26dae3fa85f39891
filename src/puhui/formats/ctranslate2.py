"""CTranslate2 model folders (model.bin + config.json), read in NumPy without ctranslate2.

The layout of model.bin (little-endian; written by ctranslate2's `ModelSpec._serialize`, read by
`models::Model::load` in model.cc):

    uint32 binary_version                          # 1..6
    string spec_name; uint32 spec_revision         # binary_version >= 2
    uint32 n_variables, then for each:
        string name; uint8 rank; uint32 dims[rank]
        uint8 dtype_id; uint32 n_bytes             # binary_version >= 4 (dtype_id: the DataType enum)
        uint8 item_size; uint32 n_items            # binary_version <= 3 (dtype guessed from the item size)
        bytes data[n_bytes]                        # row-major
    uint32 n_aliases, then (string alias, string target) each   # binary_version >= 3

A string is uint16 length (counting the terminating NUL), the UTF-8 bytes, then the NUL.
Quantised weights come with a `<name>_scale` variable: int8 weights hold round(w * scale) with one
float scale per output row (conv weights: per output channel), int16 weights one scale for the tensor.
"""
from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BadCheckpoint, Unsupported

# the order of ctranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 is read as uint16 bits
DTYPES = (np.float32, np.int8, np.int16, np.int32, np.float16, "bfloat16")
_OLD_DTYPES = {4: np.float32, 2: np.int16, 1: np.int8}  # binary_version <= 3: dtype from the item size
MAX_BINARY_VERSION = 6


@dataclass(frozen=True)
class CT2Model:
    """What a CTranslate2 folder holds: float weights by name (aliases resolved, int8/int16 dequantised)."""

    spec: str
    revision: int
    binary_version: int
    variables: dict
    config: dict


class _Reader:
    """Walks model.bin, naming the file and the offset when it is short or wrong."""

    def __init__(self, path: Path, buf):
        self.path, self.buf, self.pos = path, buf, 0

    def take(self, n: int, what: str) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise BadCheckpoint(f"{self.path}: truncated CTranslate2 model (needs {n} bytes for {what} at "
                                f"offset {start}, the file has {len(self.buf)})")
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str):
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from(fmt, self.buf, start)

    def string(self, what: str) -> str:
        (n,) = self.unpack("<H", what)
        start = self.take(n, what)
        raw = bytes(self.buf[start:start + n])
        if n == 0 or raw[-1] != 0:
            raise BadCheckpoint(f"{self.path}: bad string for {what} at offset {start} (not NUL-terminated)")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise BadCheckpoint(f"{self.path}: bad string for {what} at offset {start} (not UTF-8)") from None


def read_model_bin(path: str | Path) -> tuple[dict, dict, dict]:
    """(header, raw variables, aliases) of a model.bin; the arrays are copy-on-write views of a memory map.

    header: {"binary_version", "spec", "revision"}; raw variables keep their stored dtype (bfloat16 as
    float32); aliases map an alias to the variable it names.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)  # the mapping outlives the file handle
    except ValueError:  # mmap of an empty file
        raise BadCheckpoint(f"{path}: empty file, not a CTranslate2 model") from None
    r = _Reader(path, buf)
    (version,) = r.unpack("<I", "the binary version")
    if MAX_BINARY_VERSION < version < 100:
        raise Unsupported(f"{path}: CTranslate2 binary version {version}, newer than this reader knows "
                          f"(1..{MAX_BINARY_VERSION})")
    if not 1 <= version <= MAX_BINARY_VERSION:
        raise BadCheckpoint(f"{path}: not a CTranslate2 model (binary version {version}; "
                            f"known versions are 1..{MAX_BINARY_VERSION})")
    spec, revision = "", 1
    if version >= 2:
        spec = r.string("the spec name")
        (revision,) = r.unpack("<I", "the spec revision")
    (n_vars,) = r.unpack("<I", "the variable count")
    variables = {}
    for i in range(n_vars):
        name = r.string(f"the name of variable {i}")
        (rank,) = r.unpack("<B", f"the rank of {name}")
        shape = r.unpack(f"<{rank}I", f"the shape of {name}")
        if version >= 4:
            type_id, n_bytes = r.unpack("<BI", f"the dtype of {name}")
            if type_id >= len(DTYPES):
                raise BadCheckpoint(f"{path}: variable {name!r} has unknown dtype id {type_id}")
            dtype = DTYPES[type_id]
        else:
            item_size, n_items = r.unpack("<BI", f"the dtype of {name}")
            if item_size not in _OLD_DTYPES:
                raise BadCheckpoint(f"{path}: variable {name!r} has unknown item size {item_size}")
            dtype, n_bytes = _OLD_DTYPES[item_size], n_items * item_size
        stored = np.uint16 if dtype == "bfloat16" else dtype
        count = int(np.prod(shape, dtype=np.int64))
        if count * np.dtype(stored).itemsize != n_bytes:
            raise BadCheckpoint(f"{path}: variable {name!r} has {n_bytes} bytes for shape {shape} "
                                f"of {np.dtype(stored).name if dtype != 'bfloat16' else dtype}")
        start = r.take(n_bytes, f"the data of {name}")
        a = np.frombuffer(buf, dtype=stored, count=count, offset=start).reshape(shape)
        if dtype == "bfloat16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        variables[name] = a
    aliases = {}
    if version >= 3:
        (n_aliases,) = r.unpack("<I", "the alias count")
        for i in range(n_aliases):
            alias = r.string(f"alias {i}")
            aliases[alias] = r.string(f"the target of alias {alias!r}")
    if r.pos != len(buf):
        raise BadCheckpoint(f"{path}: {len(buf) - r.pos} bytes of garbage after the CTranslate2 model")
    for alias, target in aliases.items():
        if target not in variables:
            raise BadCheckpoint(f"{path}: alias {alias!r} names a missing variable {target!r}")
    return {"binary_version": version, "spec": spec, "revision": revision}, variables, aliases


def dequantize(name: str, value: np.ndarray, scale: np.ndarray, where: str = "model.bin") -> np.ndarray:
    """float32 weights from int8 (a scale per output row) or int16 (one scale) values."""
    if value.dtype == np.int16:
        return value.astype(np.float32) / np.float32(scale)
    if value.dtype != np.int8:
        raise Unsupported(f"{where}: variable {name!r} of dtype {value.dtype} has a quantisation scale")
    if scale.ndim > 1 or (scale.ndim == 1 and value.ndim >= 1 and scale.shape[0] != value.shape[0]):
        raise BadCheckpoint(f"{where}: scale of {name!r} has shape {scale.shape} for weights of {value.shape}")
    rows = scale.astype(np.float32).reshape((-1,) + (1,) * (value.ndim - 1)) if scale.ndim else scale
    return value.astype(np.float32) / rows


def load_ctranslate2(path: str | Path) -> CT2Model:
    """A CTranslate2 model folder (or its model.bin): weights with aliases resolved and int8/int16 dequantised."""
    path = Path(path)
    folder, file = (path.parent, path) if path.is_file() else (path, path / "model.bin")
    if not file.is_file():
        raise BadCheckpoint(f"{folder}: not a CTranslate2 model folder (no model.bin)")
    header, raw, aliases = read_model_bin(file)
    for alias, target in aliases.items():  # an alias also aliases its target's scale (model.cc)
        raw[alias] = raw[target]
        if target + "_scale" in raw:
            raw[alias + "_scale"] = raw[target + "_scale"]
    variables = {}
    for name, value in raw.items():
        if name.endswith("_scale") and name.removesuffix("_scale") in raw:
            continue
        scale = raw.get(name + "_scale")
        variables[name] = value if scale is None else dequantize(name, value, scale, str(file))
    config = {}
    config_file = folder / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BadCheckpoint(f"{config_file}: not JSON ({e})") from None
        if not isinstance(config, dict):
            raise BadCheckpoint(f"{config_file}: not a JSON object")
    return CT2Model(spec=header["spec"], revision=header["revision"], binary_version=header["binary_version"],
                    variables=variables, config=config)
