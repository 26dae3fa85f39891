"""GGUF: validation, metadata, dequantised tensors, and the mapping of llama.cpp names to Hugging Face ones.

    g = read_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")
    g.metadata["llama.block_count"]            # 30
    g.tensor("blk.0.attn_q.weight")            # float32, [out, in], still in llama.cpp's rope layout
    g.hf_config(), g.hf_state_dict()           # what transformers would load from the same file

GGUF lists a tensor's dimensions fastest-first (ggml's ne[0] is the row length); tensors here come in
PyTorch order, so a weight is [out_features, in_features] as in `nn.Linear`.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import BadCheckpoint, Unsupported
from .dequant import dequantize, type_name

GGUF_MAGIC = b"GGUF"


def open_gguf(path: str | Path):
    """A gguf.GGUFReader over the file (memory-mapped); BadCheckpoint naming the file when it is not valid GGUF."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise BadCheckpoint(f"{path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
    from gguf import GGUFReader
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as e:  # the gguf package raises ValueError/IndexError/... on truncation
        raise BadCheckpoint(f"{path}: damaged GGUF file, bad or truncated ({type(e).__name__}: {e})") from None
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise BadCheckpoint(f"{path}: damaged GGUF file: tensor {t.name!r} runs past the end of the file "
                                f"(truncated)")
    return reader


def check_gguf(path: str | Path) -> dict:
    """Validate a GGUF file (header, metadata, every tensor inside the file); return a few facts."""
    g = read_gguf(path)
    return {"architecture": g.architecture, "tensors": len(g.tensors)}


# ---------------------------------------------------------------- the file itself

# GGUFValueType id -> struct format of a scalar (8 is a string, 9 an array)
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    """Reads GGUF's little-endian values from a buffer, front to back."""

    def __init__(self, buf, pos: int = 0):
        self.buf, self.pos = buf, pos

    def scalar(self, kind: int):
        fmt = "<" + _SCALAR[kind]
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.scalar(10)
        if self.pos + n > len(self.buf):
            raise EOFError("string runs past the end")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", "replace")

    def value(self, kind: int):
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, n = self.scalar(4), self.scalar(10)
            if item in _SCALAR and item != 7:  # numbers in one go
                dtype = np.dtype("<" + _SCALAR[item])
                values = np.frombuffer(self.buf, dtype, n, self.pos).tolist()
                self.pos += n * dtype.itemsize
                return values
            return [self.value(item) for _ in range(n)]
        if kind not in _SCALAR:
            raise ValueError(f"unknown metadata value type {kind}")
        return self.scalar(kind)


@dataclass(frozen=True)
class TensorInfo:
    name: str
    qtype: int              # ggml type id (GGMLQuantizationType)
    type_name: str          # "Q4_1", "F32" ...
    shape: tuple[int, ...]  # PyTorch order: [out, in] for a weight matrix
    n_bytes: int
    offset: int             # where its data starts in the file


def _parse(path: Path, buf) -> tuple[dict, dict[str, TensorInfo]]:
    from gguf import GGML_QUANT_SIZES

    if bytes(buf[:4]) != GGUF_MAGIC:
        raise BadCheckpoint(f"{path}: not a GGUF file (magic {bytes(buf[:4])!r}, expected b'GGUF')")
    c = _Cursor(buf, 4)
    version = c.scalar(4)
    if version & 0xFFFF == 0:
        raise Unsupported(f"{path}: big-endian GGUF files are not supported")
    if version not in (2, 3):
        raise Unsupported(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
    n_tensors, n_kv = c.scalar(10), c.scalar(10)
    metadata = {}
    for _ in range(n_kv):
        key = c.string()
        metadata[key] = c.value(c.scalar(4))
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        dims = [c.scalar(10) for _ in range(c.scalar(4))]
        qtype, offset = c.scalar(4), c.scalar(10)
        infos.append((name, dims, qtype, offset))
    align = metadata.get("general.alignment", 32)
    data_start = -(-c.pos // align) * align
    tensors = {}
    for name, dims, qtype, offset in infos:
        if qtype not in GGML_QUANT_SIZES:
            raise BadCheckpoint(f"{path}: damaged GGUF file: tensor {name!r} has unknown type {qtype}")
        block, size = GGML_QUANT_SIZES[qtype]
        count = int(np.prod(dims, dtype=np.int64))
        info = TensorInfo(name, qtype, type_name(qtype), tuple(reversed(dims)), count // block * size,
                          data_start + offset)
        if name in tensors:
            raise BadCheckpoint(f"{path}: damaged GGUF file: tensor {name!r} is listed twice")
        if info.offset + info.n_bytes > len(buf):
            raise BadCheckpoint(f"{path}: damaged GGUF file: tensor {name!r} runs past the end of the file "
                                f"(truncated)")
        tensors[name] = info
    return metadata, tensors


class GGUFFile:
    """An open GGUF file: metadata as Python values, tensors by name, dequantised on demand.

    Parsed here rather than by gguf.GGUFReader, which takes seconds on a vocabulary of 50k tokens.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._buf = np.memmap(self.path, dtype=np.uint8, mode="r")
        except ValueError:  # an empty file
            raise BadCheckpoint(f"{self.path}: not a GGUF file (empty: damaged?)") from None
        try:
            self.metadata, self.tensors = _parse(self.path, self._buf)
        except (struct.error, EOFError, ValueError, IndexError, OverflowError) as e:
            raise BadCheckpoint(f"{self.path}: damaged GGUF file, bad or truncated ({type(e).__name__}: {e})") \
                from None

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, architecture={self.architecture!r}, tensors={len(self.tensors)})"

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as stored (packed blocks for a quantised type), memory-mapped, read-only."""
        info = self._info(name)
        return self._buf[info.offset:info.offset + info.n_bytes]

    def tensor(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The tensor dequantised, in PyTorch orientation, as a new tensor of `dtype`."""
        info = self._info(name)
        out = dequantize(self.raw(name), info.qtype, info.shape)
        return out if dtype == torch.float32 else out.to(dtype)

    def _info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise KeyError(f"{self.path.name}: no tensor named {name!r}")
        return self.tensors[name]

    def hf_config(self) -> dict:
        return hf_config_llama(self.metadata, self.tensors)

    def hf_state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        return hf_state_dict_llama(self, dtype)


def read_gguf(path: str | Path) -> GGUFFile:
    """Open a GGUF file (memory-mapped); BadCheckpoint if it is not a valid one."""
    return GGUFFile(path)


# ---------------------------------------------------------------- the llama family, in Hugging Face terms

# general.architecture -> HF model_type, for the architectures that share Llama's layout of tensors
LLAMA_FAMILY = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
_HF_CLASS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_LAYER_RE = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def _family(metadata: dict) -> str:
    arch = metadata.get("general.architecture")
    if arch not in LLAMA_FAMILY:
        raise Unsupported(f"GGUF architecture {arch!r} is not one puhui maps to Hugging Face names "
                          f"(supported: {', '.join(LLAMA_FAMILY)})")
    return arch


def _f32(value) -> float:
    """A float stored as float32, as the shortest decimal that reads back the same (9.99999975e-06 -> 1e-05)."""
    return float(str(np.float32(value)))


def hf_config_llama(metadata: dict, tensor_names=()) -> dict:
    """A config.json-like dict (Hugging Face names) from GGUF metadata of a llama-family model.

    `tensor_names` (any container of names) decides tie_word_embeddings: tied when there is no `output.weight`.
    """
    arch = _family(metadata)

    def get(key, default=None):
        return metadata.get(f"{arch}.{key}", default)

    heads = get("attention.head_count")
    hidden = get("embedding_length")
    vocab = get("vocab_size") or len(metadata.get("tokenizer.ggml.tokens", ())) or None
    config = {
        "model_type": LLAMA_FAMILY[arch],
        "architectures": [_HF_CLASS[arch]],
        "hidden_size": hidden,
        "intermediate_size": get("feed_forward_length"),
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": get("attention.head_count_kv", heads),
        "head_dim": get("attention.key_length") or get("rope.dimension_count") or hidden // heads,
        "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": _f32(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": get("context_length", 2048),
        "vocab_size": vocab,
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "hidden_act": "silu",
    }
    if arch == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
    scaling = get("rope.scaling.type")
    if scaling and scaling != "none":
        config["rope_scaling"] = {"rope_type": scaling, "factor": _f32(get("rope.scaling.factor", 1.0))}
        if get("rope.scaling.original_context_length"):
            config["rope_scaling"]["original_max_position_embeddings"] = get("rope.scaling.original_context_length")
    for key in ("bos", "eos", "padding"):
        token_id = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            config["pad_token_id" if key == "padding" else f"{key}_token_id"] = token_id
    return config


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face Llama name of a llama.cpp tensor name, or None for one with no counterpart (rope_freqs)."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{suffix}"
    m = _LAYER_RE.fullmatch(gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"
    return None


def unpermute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's convert-time permutation of q/k rows (interleaved rope pairs -> HF's rotate-half halves)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def hf_state_dict_llama(gguf: GGUFFile, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Every tensor under its Hugging Face name, dequantised to `dtype`, q/k back in HF's rope layout.

    A tied model (no `output.weight`) has no `lm_head.weight` entry: the model ties it to the embedding.
    Tensors with no HF counterpart (`rope_freqs.weight`) are left out; `gguf.tensor()` still reads them.
    """
    arch = _family(gguf.metadata)
    heads = gguf.metadata[f"{arch}.attention.head_count"]
    kv_heads = gguf.metadata.get(f"{arch}.attention.head_count_kv", heads)
    out = {}
    for name in gguf.tensors:
        target = hf_name(name)
        if target is None:
            continue
        w = gguf.tensor(name)
        if arch == "llama":  # only llama's converter permutes; qwen2/qwen3 use neox rope and are stored as is
            if ".attn_q." in name:
                w = unpermute_rope(w, heads)
            elif ".attn_k." in name:
                w = unpermute_rope(w, kv_heads)
        out[target] = w if dtype == torch.float32 else w.to(dtype)
    return out
