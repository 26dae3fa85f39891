"""Many LoRA adapters served beside their base in one decode batch: each row of a forward pass with its own
adapter (or none), the gathered low-rank product of Punica / S-LoRA, on CPU.

Policy:
- An adapter is PEFT's own files (`adapter_config.json` + `adapter_model.safetensors`, keys such as
  `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight`), read as they are: ours and PEFT's alike.
- Each adapted linear of the base (ours fuse q/k/v into `wqkv` and gate/up into `w13`) holds, for every
  adapter, A [in, R] (the parts' A stacked) and B [R, out] (block-diagonal over the parts' output slices, the
  scaling alpha/r folded in), zero-padded to the largest R; slot 0 is the base (no delta). So a fused layer's
  delta equals the sum of PEFT's separate per-part deltas.
- The adapters of a layer are kept side by side, A_all [in, N*R] and B_all [N*R, out]: a step computes
  (x A_all * mask) B_all, the mask keeping each row's own adapter's R columns (none for a base row). Two
  matrix products a layer whatever the mix of adapters, no gather: on CPU, where a step's cost is a few
  hundred small ops plus reading the weights once, this beats gathering each row's A and B (measured on
  SmolLM2-135M, 4 adapters of rank 16 on all seven projections; bench/lora_serving.py).
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
        self.ids: Tensor | None = None       # [B] adapter slot a row (0: the base); None: every row the base
        self._masks: dict[tuple, Tensor] = {}

    def set(self, ids: Tensor | None) -> None:
        self.ids, self._masks = ids, {}

    def mask(self, slots: int, ranks: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """[B, 1, sum((slots - 1) * r)]: for each part (rank r), ones on the r columns of each row's adapter
        (slots 1..); made once a step for each layout."""
        key = (slots, ranks, dtype)
        if key not in self._masks:
            one_hot = torch.nn.functional.one_hot(self.ids, slots)[:, 1:].to(dtype)     # [B, slots - 1]
            self._masks[key] = torch.cat([one_hot.repeat_interleave(r, dim=1) for r in ranks], 1)[:, None, :]
        return self._masks[key]


class AdaptedLinear(nn.Module):
    """A base linear (float or low-bit) plus, per row, its adapter's low-rank delta (see the module's policy).

    Layout: h = x A_all has, part after part (q, k, v of a fused wqkv), the columns of every adapter slot
    (1..slots-1, each padded to the part's largest rank r_p); the part's slice of the output gets
    h[part's columns] B_p, B_p [(slots-1) r_p, out_p]: no product with the zeros off a part's block."""

    def __init__(self, base: nn.Module, slices: list[int], rows: Rows):
        super().__init__()
        self.base, self.slices, self.rows = base, slices, rows    # slices: the out sizes of the fused parts
        self.in_features, self.out_features = base.in_features, base.out_features
        p = next(base.parameters(), None)
        if p is None:
            p = next(base.buffers())
        # float32 deltas over a low-bit base (its buffers are codes); the base's own dtype over a float one
        self.dtype = p.dtype if p.is_floating_point() and p.dtype != torch.bfloat16 else torch.float32
        self.device = p.device
        self.pairs: dict[int, dict[int, tuple[Tensor, Tensor]]] = {}   # slot -> part -> (A^T [in, r], B^T s)
        self._state = None     # (A_all, [(column range, output range, B_p)], slots, ranks): swapped at once

    def set(self, slot: int, parts: dict[int, tuple[Tensor, Tensor]], scaling: float) -> None:
        """Adapter `slot`'s pairs on this layer: part index -> (A [r, in], B [out_part, r]); none: no delta."""
        kw = {"dtype": self.dtype, "device": self.device}
        self.pairs[slot] = {i: (a.t().to(**kw), (b.t() * scaling).to(**kw)) for i, (a, b) in parts.items()}
        self._rebuild()

    def _rebuild(self) -> None:
        slots = max(self.pairs, default=0) + 1
        ranks = tuple(max((p[i][0].shape[1] for p in self.pairs.values() if i in p), default=0)
                      for i in range(len(self.slices)))
        if not any(ranks):
            self._state = None
            return
        kw = {"dtype": self.dtype, "device": self.device}
        A_all = torch.zeros(self.in_features, (slots - 1) * sum(ranks), **kw)
        products, col, out = [], 0, 0
        for i, (r, width) in enumerate(zip(ranks, self.slices)):
            if r:
                B_p = torch.zeros((slots - 1) * r, width, **kw)
                for slot, pairs in self.pairs.items():
                    if i in pairs:
                        a, b = pairs[i]
                        at = col + (slot - 1) * r
                        A_all[:, at:at + a.shape[1]] = a
                        B_p[(slot - 1) * r:(slot - 1) * r + b.shape[0]] = b
                products.append(((col, col + (slots - 1) * r), (out, out + width), B_p))
            col += (slots - 1) * r
            out += width
        self._state = (A_all, products, slots, ranks)     # one assignment: a forward sees old or new, no mix

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        state = self._state
        if self.rows.ids is None or state is None:
            return y
        A_all, products, slots, ranks = state
        h = (x if x.dtype == self.dtype else x.to(self.dtype)) @ A_all      # [B, T, sum((slots-1) r_p)]
        h = h.mul_(self.rows.mask(slots, ranks, h.dtype)).view(-1, h.shape[-1])
        if y.dtype != self.dtype or not y.is_contiguous() or torch.is_grad_enabled():
            return self._slow(y, h, products)
        flat = y.view(-1, self.out_features)           # the base's fresh output, added to in place: few ops
        for (c0, c1), (o0, o1), B_p in products:
            flat[:, o0:o1].addmm_(h[:, c0:c1], B_p)
        return y

    def _slow(self, y: Tensor, h: Tensor, products) -> Tensor:
        """The same on a copy of the base's output (another dtype, or autograd watching)."""
        flat = y.reshape(-1, self.out_features).clone()
        for (c0, c1), (o0, o1), B_p in products:
            flat[:, o0:o1] += (h[:, c0:c1] @ B_p).to(flat.dtype)
        return flat.view(y.shape)


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
            self.rows.set(None)
            return
        self.rows.set(torch.tensor(ids, dtype=torch.long, device=next(iter(self.layers.values())).device))
