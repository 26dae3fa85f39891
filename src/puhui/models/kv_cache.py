"""The static KV cache of the decoders (llama.py, gpt2.py) and the one attention function that reads it.

The contract every decoder's `forward(tokens, input_pos, slots)` follows:

- `tokens`    LongTensor [B, T]
- `input_pos` LongTensor [B, T]: the position of each token in its own sequence; -1 marks padding.
  Positions rise along a row (a prompt right-padded with -1 is the usual batch of unequal prompts).
- `slots`     LongTensor [B] or None: the cache slot of each row (None: row b uses slot b).

With a cache set up, row b writes the keys/values of its non-pad tokens into slot `slots[b]` at positions
`input_pos[b]`, and a query at position p attends to positions 0..p of that slot (p-W+1..p with a sliding
window W). Positions before this call must have been written by earlier calls (prefill, chunks, decode).
Pad tokens are neither written nor attended; their outputs are finite garbage, to be ignored.

Without a cache: plain causal attention over the given tokens (by index), pad keys masked; for training.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadInput, DoesNotFit


class KVCache(nn.Module):
    """Keys and values of one layer: [n_slots, n_kv_heads, max_seq_len, head_dim] each."""

    def __init__(self, n_slots: int, n_kv_heads: int, max_seq_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        shape = (n_slots, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(self.k.shape)

    def grow(self, n_slots: int, max_seq_len: int) -> None:
        """Make room for at least n_slots sequences of max_seq_len positions, in place: what the slots hold
        is kept (a sequence running in slot s goes on from where it was)."""
        old_slots, n_kv, old_len, head_dim = self.k.shape
        n_slots, max_seq_len = max(n_slots, old_slots), max(max_seq_len, old_len)
        if (n_slots, max_seq_len) == (old_slots, old_len):
            return
        for name in ("k", "v"):
            old = getattr(self, name)
            new = old.new_zeros((n_slots, n_kv, max_seq_len, head_dim))
            new[:old_slots, :, :old_len] = old
            setattr(self, name, new)   # a registered buffer: replaced, still a buffer

    def update(self, step: "Step", k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, n_kv_heads, T, head_dim] of the non-pad tokens; return each row's slot up to kv_len."""
        row, col, slot, pos = step.write
        self.k[slot, :, pos] = k[row, :, col].to(self.k.dtype)
        self.v[slot, :, pos] = v[row, :, col].to(self.v.dtype)
        if step.first_slot is not None:   # consecutive slots: a view, no copy
            rows = slice(step.first_slot, step.first_slot + len(step.slots))
            return self.k[rows, :, :step.kv_len], self.v[rows, :, :step.kv_len]
        return self.k[step.slots, :, :step.kv_len], self.v[step.slots, :, :step.kv_len]


@dataclass(frozen=True)
class Step:
    """What every layer's attention needs for one forward call, computed once per call."""

    mask: Tensor | None          # bool [B, 1, T, S]: may the query at t of row b see key s (None: every key)
    slots: Tensor | None = None  # [B] cache slot per row; None without a cache
    write: tuple | None = None   # (row, col, slot, pos) index tensors of every non-pad token
    kv_len: int = 0              # keys read back from the cache: positions 0..kv_len-1
    first_slot: int | None = None  # slots[0] when the slots are consecutive (the cache is then read as a view)
    grouped: dict = field(default_factory=dict, compare=False)  # n_rep -> the mask of grouped queries

    def grouped_mask(self, n_rep: int) -> Tensor:
        """The mask of the queries of n_rep heads stacked along T ([B, 1, n_rep * T, S]), made once a call."""
        if self.mask is None:
            return None
        if n_rep not in self.grouped:
            B, _, T, S = self.mask.shape
            self.grouped[n_rep] = self.mask[:, :, None].expand(B, 1, n_rep, T, S).reshape(B, 1, n_rep * T, S)
        return self.grouped[n_rep]


def make_step(input_pos: Tensor, slots: Tensor | None, cache: KVCache | None,
              sliding_window: int | None = None) -> Step:
    """The mask (and, with a cache, the write indices) for `input_pos` [B, T]; see the module docstring."""
    B, T = input_pos.shape
    device = input_pos.device
    q_pos = input_pos[:, :, None]                                        # [B, T, 1]
    if cache is None:
        k_pos = input_pos[:, None, :]                                    # [B, 1, T]
        idx = torch.arange(T, device=device)
        mask = (idx[None, :] <= idx[:, None])[None] & (k_pos >= 0)
        extra = {}
    else:
        n_slots, _, max_len, _ = cache.k.shape
        if slots is None:
            slots = torch.arange(B, device=device)
        if B > n_slots or slots.shape != (B,):
            raise BadInput(f"{B} rows need {B} cache slots (slots shape {tuple(slots.shape)}, cache has {n_slots})")
        kv_len = int(input_pos.max()) + 1
        if kv_len > max_len:
            raise DoesNotFit(f"position {kv_len - 1} is beyond the cache's {max_len} positions")
        kv_len = max(kv_len, 1)
        k_pos = torch.arange(kv_len, device=device)[None, None, :]       # [1, 1, S]
        mask = k_pos <= q_pos
        row, col = (input_pos >= 0).nonzero(as_tuple=True)
        first = slots[0].item()
        consecutive = B == 1 or bool((slots == torch.arange(first, first + B, device=device)).all())
        extra = dict(slots=slots, write=(row, col, slots[row], input_pos[row, col]), kv_len=kv_len,
                     first_slot=first if consecutive else None)
    if sliding_window is not None:
        mask = mask & (q_pos - k_pos < sliding_window)
    elif cache is not None and T == 1 and bool((input_pos == extra["kv_len"] - 1).all()):
        return Step(mask=None, **extra)   # one new token per row, all at the last position: it sees every key
    mask = mask | (q_pos < 0)  # pad queries see everything: finite outputs, never NaN
    return Step(mask=mask[:, None], **extra)


def attend(q: Tensor, k: Tensor, v: Tensor, step: Step, cache: KVCache | None) -> Tensor:
    """Scaled dot-product attention of q [B, H, T, D] over k, v [B, H_kv, T, D] (through the cache if any)."""
    if cache is not None:
        k, v = cache.update(step, k, v)
        k, v = k.to(q.dtype), v.to(q.dtype)
    B, H, T, D = q.shape
    n_kv = k.shape[1]
    if H == n_kv:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=step.mask)
    # grouped-query attention: the n_rep query heads of each kv head are stacked along T, so K/V are used
    # as they are (no repeat_interleave copy; SDPA's own enable_gqa is far slower on CPU)
    n_rep = H // n_kv
    y = F.scaled_dot_product_attention(q.reshape(B, n_kv, n_rep * T, D), k, v, attn_mask=step.grouped_mask(n_rep))
    return y.view(B, H, T, D)


def default_positions(tokens: Tensor) -> Tensor:
    """0..T-1 for every row: the input_pos of an unpadded batch starting at position 0."""
    B, T = tokens.shape
    return torch.arange(T, device=tokens.device).expand(B, T)
