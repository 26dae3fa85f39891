"""Weight-only int4 linear layers on CPU: 4-bit codes in groups of input columns, bfloat16 activations.

A weight is W = (q - 8) * scale + zero, q in 0..15, one (scale, zero) per row and group of `group_size`
input columns: the convention of torch's CPU int4 kernel (`_weight_int4pack_mm_for_cpu`), as in gpt-fast.

- From GGUF Q4_1 / Q4_0 blocks (32 columns each, w = d * q + m, or d * (q - 8)) the codes are kept as they
  are: scale = d, zero = m + 8d (Q4_1) or 0 (Q4_0); only the bfloat16 rounding of scale and zero differs
  from the file's float16 values. This is how a Q4 GGUF keeps its size and speed in our own model.
- From float weights: min/max per group, rounded to nearest (`Int4Linear.from_float`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import Unsupported

GROUP = 32
Q4_TYPES = {2: "Q4_0", 3: "Q4_1"}   # ggml type ids whose blocks map to int4 codes as they are


class Int4Linear(nn.Module):
    """y = x W^T + b with W held as packed 4-bit codes; runs in bfloat16, returns the input's dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, group_size: int = GROUP):
        super().__init__()
        if in_features % group_size:
            raise Unsupported(f"int4: {in_features} input features are not a multiple of the group {group_size}")
        if out_features % 16:
            raise Unsupported(f"int4: {out_features} output features are not a multiple of 16 (the kernel's tile)")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("packed", torch.empty(0, dtype=torch.uint8))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // group_size, out_features, 2,
                                                             dtype=torch.bfloat16))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_codes(cls, q: Tensor, scale: Tensor, zero: Tensor, bias: Tensor | None = None,
                   group_size: int = GROUP) -> "Int4Linear":
        """q [out, in] in 0..15; scale and zero [out, in / group_size]."""
        n, k = q.shape
        m = cls(k, n, bias is not None, group_size)
        m.packed = torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)
        m.scales_and_zeros = torch.stack((scale.t(), zero.t()), -1).to(torch.bfloat16).contiguous()
        if bias is not None:
            m.bias = bias.detach().float().clone()
        return m

    @classmethod
    def from_float(cls, linear: nn.Linear, group_size: int = GROUP) -> "Int4Linear":
        """Min/max group-wise quantisation of a float layer."""
        w = linear.weight.detach().float()
        n, k = w.shape
        cls(k, n, False, group_size)   # refuses shapes the kernel cannot take, before any work
        g = w.reshape(n, k // group_size, group_size)
        lo, hi = g.amin(-1), g.amax(-1)
        scale = ((hi - lo) / 15).clamp(min=1e-8)
        q = ((g - lo[..., None]) / scale[..., None]).round().clamp(0, 15).reshape(n, k)
        return cls.from_codes(q, scale, lo + 8 * scale, linear.bias, group_size)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        y = torch._weight_int4pack_mm_for_cpu(x.reshape(-1, self.in_features).to(torch.bfloat16), self.packed,
                                              self.group_size, self.scales_and_zeros)
        y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def q4_codes(raw: np.ndarray, qtype: int, shape) -> tuple[Tensor, Tensor, Tensor]:
    """GGUF Q4_0 / Q4_1 data of a [out, in] matrix -> (q [out, in] uint8, scale, zero [out, in / 32]) with
    W = (q - 8) * scale + zero exactly (before the bfloat16 rounding of scale and zero)."""
    n, k = (int(s) for s in shape)
    size = 18 if qtype == 2 else 20
    b = torch.from_numpy(np.array(raw, copy=True).reshape(-1).view(np.uint8)).reshape(n * k // GROUP, size)
    d = b[:, :2].contiguous().view(torch.float16).float().reshape(n, k // GROUP)
    qs = b[:, size - 16:]
    q = torch.cat((qs & 0x0F, qs >> 4), -1).reshape(n, k)          # low nibbles: columns 0..15, high: 16..31
    if qtype == 2:
        return q, d, torch.zeros_like(d)
    m = b[:, 2:4].contiguous().view(torch.float16).float().reshape(n, k // GROUP)
    return q, d, m + 8 * d


def check_int4_device(device) -> None:
    if torch.device(device).type != "cpu":
        raise Unsupported(f"int4 weights run on the CPU only for now (asked for {device})")


def linear_to_int4(linear: nn.Linear, codes: tuple[Tensor, Tensor, Tensor] | None = None) -> Int4Linear:
    """An Int4Linear of a float layer: from the given codes (GGUF blocks) or by min/max quantisation."""
    if codes is None:
        return Int4Linear.from_float(linear)
    q, scale, zero = codes
    if q.shape != linear.weight.shape:
        raise ValueError(f"int4 codes of shape {tuple(q.shape)} for a layer of {tuple(linear.weight.shape)}")
    return Int4Linear.from_codes(q, scale, zero, linear.bias)


def int4_reference(module: Int4Linear) -> Tensor:
    """The float32 weight an Int4Linear computes with (for tests and explanations)."""
    eye = torch.eye(module.in_features, dtype=torch.bfloat16)
    w = torch._weight_int4pack_mm_for_cpu(eye, module.packed, module.group_size, module.scales_and_zeros)
    return w.float().t()


def _gguf_codes(gguf, names: list[str], heads: list[int | None]):
    """The int4 codes of GGUF matrices stacked by rows (q/k rows un-permuted to HF's rope layout), or None
    when one of them is not Q4_0 / Q4_1."""
    from ..formats.gguf import unpermute_rope

    parts = []
    for name, n_head in zip(names, heads):
        info = gguf.tensors[name]
        if info.qtype not in Q4_TYPES:
            return None
        codes = q4_codes(gguf.raw(name), info.qtype, info.shape)
        if n_head:
            order = unpermute_rope(torch.arange(info.shape[0])[:, None], n_head)[:, 0]
            codes = tuple(c[order] for c in codes)
        parts.append(codes)
    return tuple(torch.cat(c) for c in zip(*parts))


def llama_to_int4(model: nn.Module, gguf=None) -> nn.Module:
    """Swap every decoder layer's wqkv, wo, w13 and w2 for Int4Linear (embedding, norms and the output head stay).
    With the model's GGUF file (a llama-architecture Q4_0 / Q4_1 one) the file's own 4-bit codes are used."""
    c = model.config
    permute = gguf is not None and gguf.metadata.get("general.architecture") == "llama"
    for i, layer in enumerate(model.layers):
        att, ffn = layer.attention, layer.feed_forward
        plan = {
            (att, "wqkv"): ([f"blk.{i}.attn_q.weight", f"blk.{i}.attn_k.weight", f"blk.{i}.attn_v.weight"],
                            [c.n_heads, c.n_kv_heads, None] if permute else [None] * 3),
            (att, "wo"): ([f"blk.{i}.attn_output.weight"], [None]),
            (ffn, "w13"): ([f"blk.{i}.ffn_gate.weight", f"blk.{i}.ffn_up.weight"], [None, None]),
            (ffn, "w2"): ([f"blk.{i}.ffn_down.weight"], [None]),
        }
        for (owner, attr), (names, heads) in plan.items():
            codes = _gguf_codes(gguf, names, heads) if gguf is not None else None
            setattr(owner, attr, linear_to_int4(getattr(owner, attr), codes))
    return model
