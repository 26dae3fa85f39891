"""A minimal training loop and prediction helpers: what `puhui train classifier --engine numpy` calls."""
from __future__ import annotations

import numpy as np

from ..progress import Progress, ProgressFn, silent


def fit(model, X: np.ndarray, y: np.ndarray, loss, optimizer, epochs: int = 10, batch_size: int | None = 32,
        rng: np.random.Generator | int | None = None, progress: ProgressFn = silent) -> list[float]:
    """Mini-batch training: each epoch shuffles with `rng`, then for each batch
    zero_grad -> loss(model(xb), yb) -> backward -> step. Returns the mean loss of each epoch.
    batch_size=None trains on the whole set at once."""
    rng = np.random.default_rng(rng)
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    n = len(X)
    batch_size = batch_size or n
    history = []
    for epoch in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            batch_loss = loss(model(X[idx]), y[idx])
            batch_loss.backward()
            optimizer.step()
            total += batch_loss.item() * len(idx)
        history.append(total / n)
        progress(Progress("train", epoch + 1, epochs, {"loss": history[-1]}, finished=epoch + 1 == epochs))
    return history


def predict_proba(model, X) -> np.ndarray:
    """Class probabilities, shape (n, classes). A single output unit is read as binary: [1 - p, p].

    The model's output is taken as logits (sigmoid for one unit, softmax for several) unless its
    `out_activation` is "sigmoid" or "softmax", i.e. it already outputs probabilities.
    """
    out = model(X)
    if getattr(model, "out_activation", None) in ("sigmoid", "softmax"):
        p = out.data
    else:
        p = out.sigmoid().data if out.shape[-1] == 1 else out.softmax(axis=-1).data
    return np.concatenate([1 - p, p], axis=-1) if p.shape[-1] == 1 else p


def predict(model, X) -> np.ndarray:
    """The most probable class of each row."""
    return predict_proba(model, X).argmax(axis=-1)
