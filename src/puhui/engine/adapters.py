"""Many LoRA adapters served beside their base in one decode batch: each row of a forward pass with its own
adapter (or none), the gathered low-rank product of Punica / S-LoRA, on CPU.

Policy:
- An adapter is PEFT's own files (`adapter_config.json` + `adapter_model.safetensors`, keys such as
  `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`), read as they are: ours and PEFT's alike.
- Each adapted linear of the base (ours fuse q/k/v into `wqkv` and gate/up into `w13`) holds, for every
  adapter, A [in, R] (the parts' A stacked) and B [R, out] (block-diagonal over the parts' output slices, the
  scaling alpha/r folded in), zero-padded to the largest R; slot 0 is the base (zeros). So a fused layer's
  delta equals the sum of PEFT's separate per-part deltas, and every row adds x A[id] B[id] to the base's
  output: one gathered batched matmul for all adapted rows, nothing for the base's rows.
- The base's weights are never touched (no merge): base rows compute exactly what they computed before.
- `select(ids)` says, before a forward pass, which adapter each row of the batch uses (the runner calls it).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import BadCheckpoint, BadInput, Unsupported

# HF/PEFT part name -> (our module under layers.{i}, index of the part in its fused output)
PARTS = {"q_proj": ("attention.wqkv", 0), "k_proj": ("attention.wqkv", 1), "v_proj": ("attention.wqkv", 2),
         "o_proj": ("attention.wo", 0), "gate_proj": ("feed_forward.w13", 0), "up_proj": ("feed_forward.w13", 1),
         "down_proj": ("feed_forward.w2", 0)}
_KEY = re.compile(r"(?:base_model\.model\.)?model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])"
                  r"(?:\.default)?\.weight")
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


@dataclass(frozen=True)
class Adapter:
    """An adapter's low-rank pairs by (layer, part): A [r, in], B [out, r], and its scaling."""

    name: str
    pairs: dict            # (layer, part) -> (A, B)
    scaling: float
    rank: int


def read_adapter(folder: str | Path, name: str | None = None) -> Adapter:
    """A PEFT LoRA folder as an Adapter; BadCheckpoint / Unsupported naming what it cannot take."""
    from ..formats.safetensors import load_state_dict

    folder = Path(folder)
    where = str(folder)
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except FileNotFoundError:
        raise BadInput(f"{where}: not a LoRA adapter folder (no {ADAPTER_CONFIG})", param="adapter") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadCheckpoint(f"{where}/{ADAPTER_CONFIG}: not JSON ({e})") from None
    if config.get("peft_type", "LORA") != "LORA":
        raise Unsupported(f"{where}: a {config.get('peft_type')} adapter; puhui serves LoRA adapters",
                          param="adapter")
    for key, what in (("use_dora", "DoRA"), ("rank_pattern", "per-layer ranks"), ("alpha_pattern", "per-layer alphas")):
        if config.get(key):
            raise Unsupported(f"{where}: {what} ({key}) are not served yet", param="adapter")
    if config.get("bias", "none") != "none":
        raise Unsupported(f"{where}: trained biases (bias={config['bias']!r}) are not served yet", param="adapter")
    if config.get("fan_in_fan_out"):
        raise Unsupported(f"{where}: fan_in_fan_out adapters (GPT-2 Conv1D) are not served", param="adapter")
    r, alpha = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    scaling = alpha / (r ** 0.5 if config.get("use_rslora") else r)
    state = load_state_dict(folder / ADAPTER_WEIGHTS)
    pairs: dict = {}
    for key, t in state.items():
        m = _KEY.fullmatch(key)
        if m is None or m.group(2) not in PARTS:
            raise Unsupported(f"{where}: tensor {key!r} adapts no layer puhui serves adapters on "
                              f"({', '.join(PARTS)})", param="adapter")
        layer, part, ab = int(m.group(1)), m.group(2), m.group(3)
        pairs.setdefault((layer, part), {})[ab] = t.float()
    for (layer, part), ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise BadCheckpoint(f"{where}: layer {layer} {part} has lora_{''.join(sorted(ab))} only")
        if ab["A"].shape[0] != ab["B"].shape[1]:
            raise BadCheckpoint(f"{where}: layer {layer} {part}: lora_A has rank {ab['A'].shape[0]}, "
                                f"lora_B {ab['B'].shape[1]}")
    return Adapter(name or folder.name, {k: (v["A"], v["B"]) for k, v in pairs.items()}, scaling, r)


class Rows:
    """Which adapter each row of the current forward pass uses: shared by every AdaptedLinear of a model."""

    def __init__(self):
        self.ids: Tensor | None = None       # [B] adapter slot a row (0: the base)
        self.adapted: Tensor | None = None   # row indices with an adapter; None when there are none


class AdaptedLinear(nn.Module):
    """A base linear (float or low-bit) plus, per row, its adapter's low-rank delta (see the module's policy)."""

    def __init__(self, base: nn.Module, slices: list[int], rows: Rows):
        super().__init__()
        self.base, self.slices, self.rows = base, slices, rows    # slices: the out sizes of the fused parts
        self.in_features, self.out_features = base.in_features, base.out_features
        p = next(base.parameters(), None)
        if p is None:
            p = next(base.buffers())
        # float32 deltas over a low-bit base (its buffers are codes); the base's own dtype over a float one
        self.dtype = p.dtype if p.is_floating_point() and p.dtype != torch.bfloat16 else torch.float32
        self.A = torch.zeros(1, self.in_features, 0, dtype=self.dtype, device=p.device)    # [slots, in, R]
        self.B = torch.zeros(1, 0, self.out_features, dtype=self.dtype, device=p.device)   # [slots, R, out]

    def set(self, slot: int, parts: dict[int, tuple[Tensor, Tensor]], scaling: float) -> None:
        """Adapter `slot`'s pairs on this layer: part index -> (A [r, in], B [out_part, r]); none: a zero delta."""
        offsets = [sum(self.slices[:i]) for i in range(len(self.slices))]
        rank = sum(a.shape[0] for a, _ in parts.values())
        a_cat = torch.zeros(self.in_features, rank)
        b_cat = torch.zeros(rank, self.out_features)
        r0 = 0
        for i, (a, b) in sorted(parts.items()):
            r = a.shape[0]
            a_cat[:, r0:r0 + r] = a.t()
            b_cat[r0:r0 + r, offsets[i]:offsets[i] + self.slices[i]] = b.t() * scaling
            r0 += r
        slots = max(self.A.shape[0], slot + 1)
        R = max(self.A.shape[2], rank)
        A = self.A.new_zeros(slots, self.in_features, R)
        B = self.B.new_zeros(slots, R, self.out_features)
        A[:self.A.shape[0], :, :self.A.shape[2]] = self.A
        B[:self.B.shape[0], :self.B.shape[1]] = self.B
        A[slot] = 0
        B[slot] = 0
        A[slot, :, :rank] = a_cat
        B[slot, :rank] = b_cat
        self.A, self.B = A, B

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        rows = self.rows.adapted
        if rows is None or self.A.shape[2] == 0:
            return y
        ids = self.rows.ids[rows]
        xa = x.index_select(0, rows).to(self.dtype)                           # [b, T, in]
        delta = torch.bmm(torch.bmm(xa, self.A.index_select(0, ids)), self.B.index_select(0, ids))
        return y.index_add(0, rows, delta.to(y.dtype))


class AdapterSet:
    """The adapters served on one base model: `add` (a slot for a PEFT folder), `remove`, `select` (rows)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.rows = Rows()
        self.slots: dict[str, int] = {}          # adapter name -> slot (1..)
        self.layers: dict[tuple[int, str], AdaptedLinear] = {}
        self._wrap()

    def _wrap(self) -> None:
        c = self.model.config
        sizes = {"attention.wqkv": [c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim],
                 "attention.wo": [c.dim], "feed_forward.w13": [c.hidden_dim, c.hidden_dim],
                 "feed_forward.w2": [c.dim]}
        for i, layer in enumerate(self.model.layers):
            for path, slices in sizes.items():
                owner_name, attr = path.split(".")
                owner = getattr(layer, owner_name)
                current = getattr(owner, attr)
                if not isinstance(current, AdaptedLinear):
                    current = AdaptedLinear(current, slices, self.rows)
                    setattr(owner, attr, current)
                self.layers[(i, path)] = current

    def add(self, adapter: Adapter) -> int:
        """Serve an adapter (replacing one of the same name); its slot. BadInput when it does not fit the base."""
        c = self.model.config
        by_layer: dict[tuple[int, str], dict[int, tuple[Tensor, Tensor]]] = {}
        for (layer, part), (a, b) in adapter.pairs.items():
            path, index = PARTS[part]
            if layer >= c.n_layers:
                raise BadInput(f"adapter {adapter.name!r} adapts layer {layer}; the base has {c.n_layers}",
                               param="adapter")
            target = self.layers[(layer, path)]
            want_in, want_out = target.in_features, target.slices[index]
            if a.shape[1] != want_in or b.shape[0] != want_out:
                raise BadInput(f"adapter {adapter.name!r}: layer {layer} {part} is {b.shape[0]}x{a.shape[1]}, the "
                               f"base's is {want_out}x{want_in}: an adapter of another model", param="adapter")
            by_layer.setdefault((layer, path), {})[index] = (a, b)
        taken = set(self.slots.values())
        slot = self.slots.get(adapter.name) or next(s for s in range(1, len(taken) + 2) if s not in taken)
        for key, target in self.layers.items():
            target.set(slot, by_layer.get(key, {}), adapter.scaling)
        self.slots[adapter.name] = slot
        return slot

    def remove(self, name: str) -> None:
        slot = self.slots.pop(name, None)
        if slot is not None:
            for target in self.layers.values():
                target.set(slot, {}, 1.0)

    def select(self, ids: list[int]) -> None:
        """The adapter slot of each row of the next forward pass (0: the base)."""
        if not any(ids):
            self.rows.ids = self.rows.adapted = None
            return
        t = torch.tensor(ids, dtype=torch.long, device=next(iter(self.layers.values())).A.device)
        self.rows.ids, self.rows.adapted = t, torch.nonzero(t, as_tuple=True)[0]
