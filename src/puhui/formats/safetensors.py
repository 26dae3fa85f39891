"""safetensors: header validation and (sharded, memory-mapped) state-dict loading. A file whose header does not
hold together is BadCheckpoint saying it is damaged, naming it."""
from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import BadCheckpoint

_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
_MAX_HEADER = 100 * 1024 * 1024


def read_header(path: str | Path) -> dict:
    """Parse and check a .safetensors header: every tensor inside the file, sizes matching dtype × shape."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BadCheckpoint(f"{path}: damaged safetensors file (shorter than its 8-byte header length)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise BadCheckpoint(f"{path}: damaged safetensors file: bad header (header length {n} for a file "
                                f"of {size} bytes)")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadCheckpoint(f"{path}: damaged safetensors file: bad header (not JSON: {e})") from None
    if not isinstance(header, dict):
        raise BadCheckpoint(f"{path}: damaged safetensors file: bad header (not a JSON object)")
    data_len = size - 8 - n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = t["dtype"], t["shape"], t["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise BadCheckpoint(f"{path}: damaged safetensors file: bad header entry for tensor {name!r}") from None
        if dtype not in _DTYPE_BYTES:
            raise BadCheckpoint(f"{path}: damaged safetensors file: tensor {name!r} has unknown dtype {dtype!r}")
        count = 1
        for d in shape:
            count *= int(d)
        if not (0 <= begin <= end <= data_len) or end - begin != count * _DTYPE_BYTES[dtype]:
            raise BadCheckpoint(f"{path}: damaged safetensors file: tensor {name!r} lies outside the file or has "
                                f"the wrong size (offsets {begin}..{end}, data section {data_len} bytes): truncated?")
    return header


def shard_files(path: str | Path) -> list[Path]:
    """The .safetensors files of a checkpoint: one file, or a folder (sharded via model.safetensors.index.json)."""
    path = Path(path)
    if path.is_file():
        return [path]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / n for n in names]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise BadCheckpoint(f"{path}: no .safetensors files found")
    return files


def load_state_dict(path: str | Path, device: str = "cpu") -> dict:
    """All tensors of a (possibly sharded) checkpoint, memory-mapped from disk."""
    from safetensors import SafetensorError, safe_open

    out = {}
    for file in shard_files(path):
        read_header(file)
        try:
            with safe_open(str(file), framework="pt", device=device) as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
        except SafetensorError as e:  # what read_header does not check (overlapping tensors ...)
            raise BadCheckpoint(f"{file}: damaged safetensors file ({e})") from None
    return out
