"""Dequantisation of GGML tensor data to float32, vectorised in torch (one pass over all blocks).

Block layouts follow ggml (ggml-common.h); the arithmetic follows the `gguf` package's reference
(`gguf.quants`) step for step, so results are bit-identical to it. A GGML type is named by its
integer id (a `gguf.GGMLQuantizationType` works too, being an IntEnum).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import Unsupported

QK_K = 256  # elements in a k-quant super-block

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 2 + 16),
    3: ("Q4_1", 32, 2 + 2 + 16),
    8: ("Q8_0", 32, 2 + 32),
    12: ("Q4_K", QK_K, 2 + 2 + 12 + QK_K // 2),
    13: ("Q5_K", QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
    14: ("Q6_K", QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
    30: ("BF16", 1, 2),
}


def type_name(qtype: int) -> str:
    """The GGML name of a type id, also for types we cannot dequantise."""
    if int(qtype) in GGML_TYPES:
        return GGML_TYPES[int(qtype)][0]
    try:
        from gguf import GGMLQuantizationType
        return GGMLQuantizationType(int(qtype)).name
    except (ImportError, ValueError):
        return f"type {int(qtype)}"


def _unsupported(qtype: int) -> Unsupported:
    names = ", ".join(name for name, _, _ in GGML_TYPES.values())
    return Unsupported(f"GGUF tensor type {type_name(qtype)} cannot be dequantised by puhui (supported: {names})")


def n_bytes(qtype: int, n_elements: int) -> int:
    """Bytes that `n_elements` values of this type take."""
    if int(qtype) not in GGML_TYPES:
        raise _unsupported(qtype)
    _, block, size = GGML_TYPES[int(qtype)]
    return n_elements // block * size


def _f16(b: torch.Tensor) -> torch.Tensor:
    """A 2-byte column of a (n_blocks, 2) uint8 tensor read as float16, returned as float32 (n_blocks, 1)."""
    return b.contiguous().view(torch.float16).to(torch.float32)


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(n, k) bytes -> (n, 2k): the k low nibbles, then the k high nibbles."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1)


def _q8_0(b):
    d = _f16(b[:, :2])
    return b[:, 2:].contiguous().view(torch.int8).to(torch.float32) * d


def _q4_0(b):
    d = _f16(b[:, :2])
    q = (_nibbles(b[:, 2:]).to(torch.int8) - 8).to(torch.float32)
    return d * q


def _q4_1(b):
    d, m = _f16(b[:, :2]), _f16(b[:, 2:4])
    return d * _nibbles(b[:, 4:]).to(torch.float32) + m


def _k_scales(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 six-bit scales and 8 six-bit mins packed in 12 bytes (Q4_K, Q5_K)."""
    s = scales.reshape(-1, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _k_low4(qs: torch.Tensor) -> torch.Tensor:
    """(n, 128) bytes -> (n, 8, 32): each 32-byte chunk gives its low nibbles, then its high nibbles."""
    q = qs.reshape(-1, 4, 1, 32) >> torch.tensor([0, 4], dtype=torch.uint8).reshape(1, 1, 2, 1)
    return (q & 0x0F).reshape(-1, 8, 32)


def _q4_k(b):
    n = b.shape[0]
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, mn = _k_scales(b[:, 4:16])
    d = (d * sc.to(torch.float32)).reshape(n, 8, 1)
    dm = (dmin * mn.to(torch.float32)).reshape(n, 8, 1)
    q = _k_low4(b[:, 16:]).to(torch.float32)
    return (d * q - dm).reshape(n, QK_K)


def _q5_k(b):
    n = b.shape[0]
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, mn = _k_scales(b[:, 4:16])
    d = (d * sc.to(torch.float32)).reshape(n, 8, 1)
    dm = (dmin * mn.to(torch.float32)).reshape(n, 8, 1)
    qh = b[:, 16:48].reshape(n, 1, 32) >> torch.arange(8, dtype=torch.uint8).reshape(1, 8, 1)
    q = (_k_low4(b[:, 48:]) | ((qh & 1) << 4)).to(torch.float32)
    return (d * q - dm).reshape(n, QK_K)


def _q6_k(b):
    n = b.shape[0]
    ql, qh = b[:, :128], b[:, 128:192]
    scales = b[:, 192:208].contiguous().view(torch.int8).to(torch.float32)
    d = (_f16(b[:, 208:210]) * scales).reshape(n, 16, 1)
    ql = ql.reshape(n, 2, 1, 64) >> torch.tensor([0, 4], dtype=torch.uint8).reshape(1, 1, 2, 1)
    ql = (ql & 0x0F).reshape(n, 8, 32)
    qh = qh.reshape(n, 2, 1, 32) >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8).reshape(1, 1, 4, 1)
    qh = (qh & 0x03).reshape(n, 8, 32)
    q = ((ql | (qh << 4)).to(torch.int8) - 32).reshape(n, 16, 16).to(torch.float32)
    return (d * q).reshape(n, QK_K)


_BLOCK_DEQUANT = {2: _q4_0, 3: _q4_1, 8: _q8_0, 12: _q4_k, 13: _q5_k, 14: _q6_k}


def dequantize(raw: np.ndarray | torch.Tensor, qtype: int, shape) -> torch.Tensor:
    """GGML data (any dtype: its bytes are what count) -> a new float32 tensor of `shape`.

    `shape` is in PyTorch order: its last dimension is the contiguous one (ggml's ne[0]).
    """
    qtype = int(qtype)
    if qtype not in GGML_TYPES:
        raise _unsupported(qtype)
    name, block, size = GGML_TYPES[qtype]
    shape = tuple(int(s) for s in shape)
    count = int(np.prod(shape, dtype=np.int64))
    if isinstance(raw, torch.Tensor):
        data = raw.detach().contiguous().reshape(-1).view(torch.uint8).clone()
    else:  # a copy: the source is often a read-only memory map
        data = torch.from_numpy(np.array(raw, copy=True).reshape(-1).view(np.uint8))
    if count % block or data.numel() != count // block * size:
        raise ValueError(f"{name} data of {data.numel()} bytes does not hold a tensor of shape {shape}")
    if qtype == 0:
        out = data.view(torch.float32)
    elif qtype == 1:
        out = data.view(torch.float16).to(torch.float32)
    elif qtype == 30:  # bfloat16 is the top half of a float32
        out = (data.view(torch.int16).to(torch.int32) << 16).view(torch.float32)
    else:
        out = _BLOCK_DEQUANT[qtype](data.reshape(-1, size))
    return out.reshape(shape)
