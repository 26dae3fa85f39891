"""Losses, each the mean over the batch (PyTorch's reduction="mean"). Targets are plain arrays."""
from __future__ import annotations

import math

import numpy as np

from .tensor import Tensor

_LOG_FLOOR = math.exp(-100)  # PyTorch clamps log(p) in binary_cross_entropy at -100; so do we


def _target(target, like: Tensor) -> np.ndarray:
    """The target as a float array of the prediction's shape ((n,) is accepted for (n, 1))."""
    target = target.data if isinstance(target, Tensor) else target
    return np.asarray(target, dtype=np.float64).reshape(like.shape)


def mse_loss(pred: Tensor, target) -> Tensor:
    diff = pred - _target(target, pred)
    return (diff * diff).mean()


def binary_cross_entropy(prob: Tensor, target) -> Tensor:
    """-[y log p + (1-y) log(1-p)] on probabilities p (e.g. after a sigmoid output layer).

    A saturated sigmoid can round p to exactly 0 or 1; logs are floored at -100 as PyTorch does.
    Prefer binary_cross_entropy_with_logits, which never needs the floor.
    """
    y = _target(target, prob)
    log_p = prob.clip(lo=_LOG_FLOOR).log()
    log_not_p = (1 - prob).clip(lo=_LOG_FLOOR).log()
    return -(log_p * y + log_not_p * (1 - y)).mean()


def binary_cross_entropy_with_logits(logits: Tensor, target) -> Tensor:
    """The same loss with p = sigmoid(z), simplified: -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z.

    softplus is computed stably, so a logit of 1000 gives a finite loss and gradient.
    """
    y = _target(target, logits)
    return (logits.softplus() - logits * y).mean()


def cross_entropy(logits: Tensor, target) -> Tensor:
    """Softmax cross-entropy from logits (n, k) and integer class labels (n,): -log softmax(z)[y]."""
    labels = np.asarray(target.data if isinstance(target, Tensor) else target).astype(np.int64).reshape(-1)
    one_hot = np.eye(logits.shape[-1])[labels]
    return -(logits.log_softmax(axis=-1) * one_hot).sum(axis=-1).mean()
