"""A Tensor: a float64 NumPy array that remembers how it was made, so it can send gradients back.

This is micrograd's `Value` grown up to arrays. Every operation builds a new Tensor and a small
`_backward` closure that knows the local derivative of that one operation. `backward()` sorts the
graph topologically and runs the closures from the output back to the leaves (the chain rule).

The one thing arrays add over scalars is broadcasting: `x + b` with x (n, k) and b (k,) uses b n
times, so b's gradient is the sum of the n copies' gradients. `_unbroadcast` does that sum.
"""
from __future__ import annotations

import numpy as np


def _unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing NumPy broadcasting (a broadcast input was used many times)."""
    while grad.ndim > len(shape):           # leading axes that broadcasting added
        grad = grad.sum(axis=0)
    for i, n in enumerate(shape):           # axes of length 1 that broadcasting stretched
        if n == 1 and grad.shape[i] != 1:
            grad = grad.sum(axis=i, keepdims=True)
    return grad


def _axes(axis, ndim: int):
    """`axis` as a tuple of non-negative ints (None means every axis)."""
    if axis is None:
        return tuple(range(ndim))
    axis = axis if isinstance(axis, tuple) else (axis,)
    return tuple(a % ndim for a in axis)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), written so that neither branch overflows."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def as_tensor(x) -> "Tensor":
    return x if isinstance(x, Tensor) else Tensor(x)


class Tensor:
    __array_ufunc__ = None  # make `ndarray + Tensor` call Tensor.__radd__ instead of looping in NumPy

    def __init__(self, data, _children=(), _op=""):
        self.data = np.array(data, dtype=np.float64)  # always a copy: a Tensor owns its array
        self.grad = np.zeros_like(self.data)
        self._backward = lambda: None
        self._prev = tuple(_children)
        self._op = _op

    # -- elementwise arithmetic ---------------------------------------------------------------

    def __add__(self, other):
        other = as_tensor(other)
        out = Tensor(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += _unbroadcast(out.grad, self.shape)
            other.grad += _unbroadcast(out.grad, other.shape)
        out._backward = _backward
        return out

    def __mul__(self, other):
        other = as_tensor(other)
        out = Tensor(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += _unbroadcast(other.data * out.grad, self.shape)
            other.grad += _unbroadcast(self.data * out.grad, other.shape)
        out._backward = _backward
        return out

    def __truediv__(self, other):
        other = as_tensor(other)
        out = Tensor(self.data / other.data, (self, other), "/")

        def _backward():
            self.grad += _unbroadcast(out.grad / other.data, self.shape)
            other.grad += _unbroadcast(-out.grad * self.data / other.data**2, other.shape)
        out._backward = _backward
        return out

    def __pow__(self, p):
        assert isinstance(p, (int, float)), "only a constant power is supported"
        out = Tensor(self.data**p, (self,), f"**{p}")

        def _backward():
            self.grad += p * self.data ** (p - 1) * out.grad
        out._backward = _backward
        return out

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-as_tensor(other))

    def __radd__(self, other):
        return self + other

    def __rsub__(self, other):
        return as_tensor(other) - self

    def __rmul__(self, other):
        return self * other

    def __rtruediv__(self, other):
        return as_tensor(other) / self

    # -- matrix product -----------------------------------------------------------------------

    def __matmul__(self, other):
        other = as_tensor(other)
        assert self.ndim >= 2 and other.ndim >= 2, "matmul needs matrices (reshape vectors to (1, n) or (n, 1))"
        out = Tensor(self.data @ other.data, (self, other), "@")

        def _backward():  # out = A @ B  =>  dA = dOut @ B^T,  dB = A^T @ dOut
            self.grad += _unbroadcast(out.grad @ other.data.swapaxes(-1, -2), self.shape)
            other.grad += _unbroadcast(self.data.swapaxes(-1, -2) @ out.grad, other.shape)
        out._backward = _backward
        return out

    def __rmatmul__(self, other):
        return as_tensor(other) @ self

    # -- reductions ---------------------------------------------------------------------------

    def sum(self, axis=None, keepdims=False):
        out = Tensor(self.data.sum(axis=axis, keepdims=keepdims), (self,), "sum")

        def _backward():
            g = out.grad if keepdims else np.expand_dims(out.grad, _axes(axis, self.ndim))
            self.grad += np.broadcast_to(g, self.shape)
        out._backward = _backward
        return out

    def mean(self, axis=None, keepdims=False):
        count = int(np.prod([self.shape[a] for a in _axes(axis, self.ndim)]))
        return self.sum(axis=axis, keepdims=keepdims) / count

    # -- elementwise functions ----------------------------------------------------------------

    def exp(self):
        out = Tensor(np.exp(self.data), (self,), "exp")

        def _backward():
            self.grad += out.data * out.grad
        out._backward = _backward
        return out

    def log(self):
        out = Tensor(np.log(self.data), (self,), "log")

        def _backward():
            self.grad += out.grad / self.data
        out._backward = _backward
        return out

    def sigmoid(self):
        out = Tensor(_sigmoid(self.data), (self,), "sigmoid")

        def _backward():
            self.grad += out.data * (1 - out.data) * out.grad
        out._backward = _backward
        return out

    def relu(self):
        out = Tensor(np.maximum(self.data, 0), (self,), "relu")

        def _backward():
            self.grad += (self.data > 0) * out.grad
        out._backward = _backward
        return out

    def tanh(self):
        out = Tensor(np.tanh(self.data), (self,), "tanh")

        def _backward():
            self.grad += (1 - out.data**2) * out.grad
        out._backward = _backward
        return out

    def softplus(self):
        """log(1 + e^x), stably: max(x, 0) + log1p(e^-|x|). Its derivative is sigmoid(x)."""
        out = Tensor(np.maximum(self.data, 0) + np.log1p(np.exp(-np.abs(self.data))), (self,), "softplus")

        def _backward():
            self.grad += _sigmoid(self.data) * out.grad
        out._backward = _backward
        return out

    def clip(self, lo=None, hi=None):
        """Clamp to [lo, hi]; the gradient flows only where the value was not clamped."""
        out = Tensor(np.clip(self.data, lo, hi), (self,), "clip")

        def _backward():
            inside = np.ones(self.shape, dtype=bool)
            if lo is not None:
                inside &= self.data >= lo
            if hi is not None:
                inside &= self.data <= hi
            self.grad += inside * out.grad
        out._backward = _backward
        return out

    def softmax(self, axis=-1):
        """e^x / sum(e^x) along `axis`; the max is subtracted first so e^x never overflows."""
        e = np.exp(self.data - self.data.max(axis=axis, keepdims=True))
        out = Tensor(e / e.sum(axis=axis, keepdims=True), (self,), "softmax")

        def _backward():  # Jacobian diag(s) - s s^T, applied to the incoming gradient
            s, g = out.data, out.grad
            self.grad += s * (g - (g * s).sum(axis=axis, keepdims=True))
        out._backward = _backward
        return out

    def log_softmax(self, axis=-1):
        """x - log(sum(e^x)) along `axis`, computed stably (the cross-entropy building block)."""
        shifted = self.data - self.data.max(axis=axis, keepdims=True)
        out = Tensor(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True)), (self,), "log_softmax")

        def _backward():
            g = out.grad
            self.grad += g - np.exp(out.data) * g.sum(axis=axis, keepdims=True)
        out._backward = _backward
        return out

    # -- shape --------------------------------------------------------------------------------

    def reshape(self, *shape):
        out = Tensor(self.data.reshape(*shape), (self,), "reshape")

        def _backward():
            self.grad += out.grad.reshape(self.shape)
        out._backward = _backward
        return out

    def transpose(self, *axes):
        axes = axes or tuple(reversed(range(self.ndim)))
        out = Tensor(self.data.transpose(*axes), (self,), "transpose")

        def _backward():
            self.grad += out.grad.transpose(np.argsort(axes))
        out._backward = _backward
        return out

    @property
    def T(self):
        return self.transpose()

    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    # -- the chain rule -----------------------------------------------------------------------

    def backward(self):
        """Fill `.grad` of every Tensor this scalar depends on with d(self)/d(that tensor)."""
        assert self.data.size == 1, "backward() starts from a scalar (a loss)"
        topo, visited = [], set()

        def build(v):
            if id(v) not in visited:
                visited.add(id(v))
                for child in v._prev:
                    build(child)
                topo.append(v)
        build(self)

        self.grad = np.ones_like(self.data)
        for v in reversed(topo):
            v._backward()

    def __repr__(self):
        return f"Tensor({self.data!r}, op={self._op!r})" if self._op else f"Tensor({self.data!r})"
