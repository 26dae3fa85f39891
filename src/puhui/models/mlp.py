"""The seed §5 network: Linear -> ReLU -> ... -> Linear, for tabular classification.

Laid out like puhui.nn.MLP (an nn.Sequential with activations in the odd slots: layers.0, layers.2, ...),
so weights trained by the NumPy teaching engine load here unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class MLPConfig:
    n_in: int
    n_out: int
    hidden: tuple[int, ...] = (50,)


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        sizes = (cfg.n_in, *cfg.hidden, cfg.n_out)
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            mods.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                mods.append(nn.ReLU())
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
