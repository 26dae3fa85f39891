"""LoRA for training, as a module swap on our own Llama (PEFT's `tuners/lora/layer.py` idea): each chosen
projection keeps its frozen base layer and gains A [r, in] and B [out, r], y = base(x) + (dropout(x) A^T B^T)
* alpha / r; A starts as PEFT starts it (kaiming-uniform, a = sqrt(5)), B at zero, so training starts from the
base exactly.

Our q/k/v live in one fused `wqkv` and gate/up in one `w13`: an adapter on q_proj is a low-rank delta on the q
rows of the fused output, so the model is the one PEFT trains on separate q_proj/k_proj/v_proj layers.

The trainable weights live in a `LoRA` module (what the Trainer sees: its state dict is the adapter and nothing
else; the base is not registered in it), named as PEFT names them, and are written in PEFT's layout
(`adapter_config.json` + `adapter_model.safetensors`): PEFT loads ours, and we load PEFT's
(engine/adapters.read_adapter, for serving in one batch with other adapters).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from ..atomic import write_atomic
from ..engine.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, PARTS
from ..errors import BadInput

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRAPair(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))


class LoRALinear(nn.Module):
    """A frozen base linear plus the low-rank deltas of some of its fused parts."""

    def __init__(self, base: nn.Module, slices: list[int], pairs: dict[int, LoRAPair], scaling: float,
                 dropout: float):
        super().__init__()
        self.base = base
        self.slices, self.scaling = slices, scaling
        self.in_features, self.out_features = base.in_features, base.out_features
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        object.__setattr__(self, "pairs", pairs)        # registered in the LoRA module, not in the model

    def forward(self, x: Tensor) -> Tensor:
        y = self.base(x)
        xd = self.dropout(x)
        parts = [None if i not in self.pairs else ((xd @ self.pairs[i].lora_A.t()) @ self.pairs[i].lora_B.t())
                 * self.scaling for i in range(len(self.slices))]
        if all(p is not None for p in parts):
            return y + (torch.cat(parts, -1) if len(parts) > 1 else parts[0])
        pieces = [y_p if d is None else y_p + d for y_p, d in zip(y.split(self.slices, -1), parts)]
        return torch.cat(pieces, -1)


class LoRA(nn.Module):
    """The adapter: every LoRAPair by PEFT's name (layers.3.self_attn.q_proj), and the model it is applied to."""

    def __init__(self, model: nn.Module, rank: int = 16, alpha: float = 32, dropout: float = 0.0,
                 targets=TARGETS, seed: int = 0):
        super().__init__()
        targets = tuple(targets)
        unknown = [t for t in targets if t not in PARTS]
        if not targets or unknown:
            raise BadInput(f"targets: unknown layer {unknown[0]!r} (choose among {', '.join(TARGETS)})" if unknown
                           else "targets: choose at least one layer", param="targets")
        if not isinstance(rank, int) or rank < 1:
            raise BadInput(f"rank must be an integer >= 1, not {rank!r}", param="rank")
        c = model.config
        sizes = {"attention.wqkv": [c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim],
                 "attention.wo": [c.dim], "feed_forward.w13": [c.hidden_dim, c.hidden_dim], "feed_forward.w2": [c.dim]}
        for part in targets:
            path, index = PARTS[part]
            fan_in = c.n_heads * c.head_dim if part == "o_proj" else c.hidden_dim if part == "down_proj" else c.dim
            if rank > min(fan_in, sizes[path][index]):
                raise BadInput(f"rank {rank} is larger than {part} ({sizes[path][index]}x{fan_in})", param="rank")
        object.__setattr__(self, "model", model)
        self.rank, self.alpha, self.dropout, self.targets = rank, alpha, dropout, targets
        for p in model.parameters():
            p.requires_grad_(False)
        self.pairs = nn.ModuleDict()
        g = torch.random.fork_rng()
        with g:
            torch.manual_seed(seed)
            for i, layer in enumerate(model.layers):
                for path, slices in sizes.items():
                    owner_name, attr = path.split(".")
                    owner = getattr(layer, owner_name)
                    mine = {}
                    for part in targets:
                        p_path, index = PARTS[part]
                        if p_path == path:
                            pair = LoRAPair(getattr(owner, attr).in_features, slices[index], rank)
                            self.pairs[_key(i, part)] = pair
                            mine[index] = pair
                    if mine:
                        setattr(owner, attr, LoRALinear(getattr(owner, attr), slices, mine, alpha / rank, dropout))

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    def peft_state_dict(self) -> dict[str, Tensor]:
        out = {}
        for key, pair in self.pairs.items():
            layer, group, part = key.split("-")
            stem = f"base_model.model.model.layers.{layer}.{group}.{part}"
            out[f"{stem}.lora_A.weight"] = pair.lora_A.detach().float().contiguous()
            out[f"{stem}.lora_B.weight"] = pair.lora_B.detach().float().contiguous()
        return out

    def config(self, base: str) -> dict:
        return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.rank, "lora_alpha": self.alpha,
                "lora_dropout": self.dropout, "target_modules": list(self.targets), "bias": "none",
                "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "inference_mode": True,
                "base_model_name_or_path": base, "init_lora_weights": True, "modules_to_save": None}

    def save(self, folder: str | Path, base: str) -> Path:
        """PEFT's files, each written atomically."""
        from safetensors.torch import save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / ADAPTER_WEIGHTS, save(self.peft_state_dict(), metadata={"format": "pt"}))
        write_atomic(folder / ADAPTER_CONFIG, json.dumps(self.config(base), indent=2).encode())
        return folder


def _key(layer: int, part: str) -> str:
    group = "self_attn" if part in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    return f"{layer}-{group}-{part}"          # a ModuleDict key cannot hold dots
