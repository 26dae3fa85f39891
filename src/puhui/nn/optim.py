"""SGD with momentum and Adam, step for step what torch.optim does (so their losses can be compared)."""
from __future__ import annotations

import numpy as np

from .tensor import Tensor


class SGD:
    """buf = momentum * buf + grad;  p -= lr * buf   (grad includes weight_decay * p, as in PyTorch)."""

    def __init__(self, params: list[Tensor], lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params, self.lr, self.momentum, self.weight_decay = list(params), lr, momentum, weight_decay
        self.bufs = [None] * len(self.params)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = np.zeros_like(p.data)

    def step(self) -> None:
        for i, p in enumerate(self.params):
            g = p.grad + self.weight_decay * p.data
            if self.momentum:
                # PyTorch starts the buffer at the first gradient (not at momentum * 0 + grad: the same here)
                self.bufs[i] = g.copy() if self.bufs[i] is None else self.momentum * self.bufs[i] + g
                g = self.bufs[i]
            p.data -= self.lr * g


class Adam:
    """m, v = running means of grad and grad^2; p -= lr * m_hat / (sqrt(v_hat) + eps), as torch.optim.Adam.

    Written the way PyTorch evaluates it: step = lr / (1 - b1^t), denom = sqrt(v) / sqrt(1 - b2^t) + eps
    (eps is added outside the square root, after the bias correction).
    """

    def __init__(self, params: list[Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.params, self.lr, self.betas, self.eps, self.weight_decay = list(params), lr, betas, eps, weight_decay
        self.m = [np.zeros_like(p.data) for p in self.params]
        self.v = [np.zeros_like(p.data) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = np.zeros_like(p.data)

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad + self.weight_decay * p.data
            m[...] = b1 * m + (1 - b1) * g
            v[...] = b2 * v + (1 - b2) * g * g
            step_size = self.lr / (1 - b1**self.t)
            denom = np.sqrt(v) / np.sqrt(1 - b2**self.t) + self.eps
            p.data -= step_size * m / denom
