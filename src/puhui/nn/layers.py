"""Layers: Linear, the activations, and MLP, which stacks them.

A layer is called on a batch, `layer(x) -> Tensor`, and lists its trainable Tensors in
`parameters()`. Weights are stored the way the maths reads, `y = x @ W + b` with W of shape
(in, out). `state_dict()` exports them the way PyTorch stores them (weight (out, in)), under the
names a `torch.nn.Sequential` would use, so a NumPy-trained net loads straight into PyTorch.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import BadCheckpoint
from .tensor import Tensor, as_tensor


class Module:
    """What every layer has: call = forward, a list of parameters, weights as plain arrays."""

    def __call__(self, x) -> Tensor:
        return self.forward(as_tensor(x))

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def parameters(self) -> list[Tensor]:
        return []

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = np.zeros_like(p.data)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if state:
            raise BadCheckpoint(f"{type(self).__name__} has no weights, got {sorted(state)}")


class Linear(Module):
    """y = x @ W + b. Initialised like torch.nn.Linear: W and b ~ U(-1/sqrt(in), 1/sqrt(in)).

    (PyTorch calls it kaiming_uniform_ with a=sqrt(5); the bound works out to 1/sqrt(fan_in).)
    `rng` is a numpy Generator or a seed.
    """

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator | int | None = None):
        rng = np.random.default_rng(rng)
        bound = 1 / math.sqrt(n_in)
        self.W = Tensor(rng.uniform(-bound, bound, (n_in, n_out)))
        self.b = Tensor(rng.uniform(-bound, bound, n_out))

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.W + self.b

    def parameters(self) -> list[Tensor]:
        return [self.W, self.b]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"weight": self.W.data.T.copy(), "bias": self.b.data.copy()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if set(state) != {"weight", "bias"}:
            raise BadCheckpoint(f"Linear wants 'weight' and 'bias', got {sorted(state)}")
        weight, bias = np.asarray(state["weight"]).T, np.asarray(state["bias"])
        if weight.shape != self.W.shape or bias.shape != self.b.shape:
            raise BadCheckpoint(f"Linear{self.W.shape}: got weight {weight.shape[::-1]}, bias {bias.shape}")
        self.W.data[...] = weight
        self.b.data[...] = bias

    def __repr__(self):
        return f"Linear({self.W.shape[0]}, {self.W.shape[1]})"


class ReLU(Module):
    def forward(self, x):
        return x.relu()


class Sigmoid(Module):
    def forward(self, x):
        return x.sigmoid()


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class Softmax(Module):
    def forward(self, x):
        return x.softmax(axis=-1)


ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "softmax": Softmax}


class MLP(Module):
    """Linear layers of the given sizes with `activation` between them and `out_activation` after the last.

    MLP([30, 16, 8, 1], "sigmoid", out_activation="sigmoid") is the seed essay's three-layer network.
    With out_activation=None (the usual choice) the output is logits: train it with a *_with_logits
    or cross_entropy loss. `self.layers` is laid out like torch.nn.Sequential, so the weights are
    named "layers.0.weight", "layers.0.bias", "layers.2.weight", ... (activations take the odd slots).
    """

    def __init__(self, sizes: list[int], activation: str = "relu", out_activation: str | None = None,
                 rng: np.random.Generator | int | None = None):
        for name in (activation, out_activation):
            if name is not None and name not in ACTIVATIONS:
                raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
        rng = np.random.default_rng(rng)
        self.sizes, self.activation, self.out_activation = list(sizes), activation, out_activation
        self.layers: list[Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.layers.append(Linear(n_in, n_out, rng))
            act = out_activation if i == len(sizes) - 2 else activation
            if act is not None:
                self.layers.append(ACTIVATIONS[act]())

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def parameters(self) -> list[Tensor]:
        return [p for layer in self.layers for p in layer.parameters()]

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"layers.{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.state_dict().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        mine = set(self.state_dict())
        if set(state) != mine:
            raise BadCheckpoint(f"missing {sorted(mine - set(state))}, unexpected {sorted(set(state) - mine)}")
        for i, layer in enumerate(self.layers):
            prefix = f"layers.{i}."
            layer.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def __repr__(self):
        return f"MLP({self.sizes}, activation={self.activation!r}, out_activation={self.out_activation!r})"
