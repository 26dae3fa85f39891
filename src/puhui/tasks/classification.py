"""The seed §5 classifier: a CSV (or bundled data) in, a trained MLP in the store, accuracy and a confusion
matrix out, beside scikit-learn's MLPClassifier on the same split."""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import store
from ..data.tabular import TabularEncoder, read_csv, split_xy
from ..atomic import write_atomic
from ..errors import BadInput
from ..models.mlp import MLP, MLPConfig
from ..progress import ProgressFn, say
from ..settings import get_settings

TASK = "classification"


def bundled_breast_cancer():
    """scikit-learn's breast-cancer data (ships inside the package) as a frame with a 'diagnosis' column."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    df = d.frame.drop(columns=["target"])
    df["diagnosis"] = np.asarray(d.target_names)[d.target.to_numpy()]
    return df


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _split(x: np.ndarray, y: np.ndarray, seed: int) -> Split:
    """Stratified 70/15/15 (plain random when a class is too small to stratify)."""
    from sklearn.model_selection import train_test_split

    def strat(labels):
        return labels if np.bincount(labels).min() >= 2 else None

    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=strat(y))
    x_va, x_te, y_va, y_te = train_test_split(x_rest, y_rest, test_size=0.5, random_state=seed,
                                              stratify=strat(y_rest))
    return Split(x_tr, y_tr, x_va, y_va, x_te, y_te)


def _accuracy(model: MLP, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(-1).numpy()
    return float((pred == y).mean())


def _train_torch(model: MLP, s: Split, *, epochs, lr, batch_size, seed, run_dir, resume, patience, progress):
    from torch.utils.data import TensorDataset

    from ..train import TrainConfig, fit

    train = TensorDataset(torch.from_numpy(s.x_train), torch.from_numpy(s.y_train))
    val = TensorDataset(torch.from_numpy(s.x_val), torch.from_numpy(s.y_val))

    def loss_fn(m, batch):
        xb, yb = batch
        return torch.nn.functional.cross_entropy(m(xb), yb)

    def evaluate(m, loader):
        right = total = 0
        for xb, yb in loader:
            right += int((m(xb).argmax(-1) == yb).sum())
            total += len(yb)
        return {"accuracy": right / max(total, 1)}

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam", seed=seed,
                      out_dir=str(run_dir), resume=resume, early_stopping_patience=patience,
                      monitor="val_accuracy", monitor_mode="max")
    result = fit(model, loss_fn, train, cfg, val_data=val, evaluate=evaluate, progress=progress)
    return [r["train_loss"] for r in result.history], result.paths


def _train_numpy(model: MLP, s: Split, *, epochs, lr, batch_size, seed, hidden, progress):
    """The same network trained by the from-scratch NumPy engine; its weights then load into `model`."""
    from .. import nn as pnn

    net = pnn.MLP([s.x_train.shape[1], *hidden, int(model.cfg.n_out)], activation="relu", rng=seed)
    opt = pnn.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    for epoch in range(epochs):
        losses += pnn.fit(net, s.x_train, s.y_train, pnn.cross_entropy, opt, epochs=1, batch_size=batch_size,
                          rng=rng)
        val_acc = float((pnn.predict(net, s.x_val) == s.y_val).mean())
        say(progress, f"Epoch {epoch + 1}: Loss = {losses[-1]:.4f}, val_accuracy = {val_acc:.4f}")
    model.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in net.state_dict().items()})
    return losses


def _baseline(s: Split, hidden: tuple[int, ...], seed: int) -> float:
    """scikit-learn's MLPClassifier, its defaults but our hidden sizes, on the same standardised split."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=hidden, max_iter=500, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(s.x_train, s.y_train)
    return float(clf.score(s.x_test, s.y_test))


def _confusion_png(cm: np.ndarray, classes: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(classes), 1.0 + 0.8 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_classifier(data: Optional[str] = None, target: Optional[str] = None, *, epochs: int = 20,
                     hidden: tuple[int, ...] = (50,), lr: float = 1e-3, batch_size: int = 32, engine: str = "torch",
                     name: Optional[str] = None, seed: int = 0, resume: bool = False,
                     patience: Optional[int] = None, progress: Optional[ProgressFn] = None) -> dict:
    """Train, evaluate against the baseline, save to the store; return the numbers as a dict."""
    if engine not in ("torch", "numpy"):
        raise BadInput(f"--engine must be torch or numpy, got {engine!r}")
    if epochs < 1 or batch_size < 1 or lr <= 0 or any(h < 1 for h in hidden):
        raise BadInput("epochs, batch size, hidden sizes and learning rate must be positive")
    if data is None:
        df, source = bundled_breast_cancer(), "sklearn:breast_cancer"
        target = target or "diagnosis"
        name = name or "breast-cancer-classifier"
    else:
        df, source = read_csv(data), f"file:{Path(data).resolve()}"
        name = name or f"{Path(data).stem}-classifier"
    store.check_name(name)
    label = data or "bundled breast-cancer data"
    features, labels, target = split_xy(df, target, source=label)
    classes = sorted(set(labels))
    y = np.searchsorted(classes, labels).astype(np.int64)
    idx = _split(np.arange(len(y)), y, seed)
    # scaling statistics and categories come from the training rows only; unseen categories encode as zeros
    enc = TabularEncoder.fit(features.iloc[idx.x_train], source=label)
    x = enc.transform(features, source=label)
    s = Split(x[idx.x_train], idx.y_train, x[idx.x_val], idx.y_val, x[idx.x_test], idx.y_test)
    say(progress, f"data: {label}: {len(y)} rows, {x.shape[1]} features, classes {classes}; "
                  f"split {len(s.y_train)}/{len(s.y_val)}/{len(s.y_test)} (train/val/test)")

    torch.manual_seed(seed)
    model = MLP(MLPConfig(n_in=x.shape[1], n_out=len(classes), hidden=tuple(hidden)))
    run_dir = get_settings().runs_dir / name
    run_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes | Path] = {}
    if engine == "torch":
        losses, paths = _train_torch(model, s, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                     run_dir=run_dir, resume=resume, patience=patience, progress=progress)
        if "plot" in paths:
            files["loss_curve.png"] = paths["plot"]
    else:
        losses = _train_numpy(model, s, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, hidden=hidden,
                              progress=progress)
    model.eval()
    from sklearn.metrics import confusion_matrix

    with torch.no_grad():
        pred = model(torch.from_numpy(s.x_test)).argmax(-1).numpy()
    test_acc = float((pred == s.y_test).mean())
    cm = confusion_matrix(s.y_test, pred, labels=list(range(len(classes))))
    baseline = _baseline(s, tuple(hidden), seed)
    _confusion_png(cm, classes, run_dir / "confusion_matrix.png")
    files["confusion_matrix.png"] = run_dir / "confusion_matrix.png"

    from safetensors.torch import save

    files["model.safetensors"] = save({k: v.contiguous() for k, v in model.state_dict().items()})
    result = {
        "model": name, "engine": engine, "epochs": epochs, "data": source, "target": target, "classes": classes,
        "train_rows": len(s.y_train), "val_rows": len(s.y_val), "test_rows": len(s.y_test),
        "final_loss": losses[-1] if losses else None,
        "val_accuracy": _accuracy(model, s.x_val, s.y_val), "test_accuracy": test_acc,
        "baseline": "sklearn.neural_network.MLPClassifier", "baseline_test_accuracy": baseline,
        "confusion_matrix": cm.tolist(), "run_dir": str(run_dir),
    }
    files["metrics.json"] = json.dumps(result, indent=2).encode()
    extra = {"target": target, "classes": classes, "encoder": enc.to_dict(), "feature_names": enc.feature_names,
             "hidden": list(hidden), "engine": engine, "metrics": {k: result[k] for k in (
                 "test_accuracy", "baseline_test_accuracy", "val_accuracy", "epochs")}}
    card = (f"An MLP classifier (hidden {list(hidden)}) of {target!r} into {classes}, trained by puhui "
            f"({engine} engine) on {label}. Test accuracy {test_acc:.4f}; scikit-learn MLPClassifier on the same "
            f"split {baseline:.4f}.")
    store.save_model(name, TASK, "mlp", "safetensors", files, extra=extra, source=source, card=card,
                     main="model.safetensors")
    return result


class Classifier:
    """A trained tabular classifier from the store."""

    def __init__(self, manifest):
        from ..models.loader import load_weights

        self.manifest = manifest
        ex = manifest.extra
        self.classes: list[str] = ex["classes"]
        self.target: str = ex["target"]
        self.encoder = TabularEncoder.from_dict(ex["encoder"])
        self.model = MLP(MLPConfig(n_in=len(self.encoder.feature_names), n_out=len(self.classes),
                                   hidden=tuple(ex["hidden"])))
        load_weights(self.model, manifest.path("model.safetensors"))   # checked; a damaged file names itself
        self.model.eval()

    def predict_proba(self, df, source: str = "data") -> np.ndarray:
        x = self.encoder.transform(df, source=source)
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(x)), -1).numpy()

    def predict(self, df, source: str = "data") -> list[str]:
        return [self.classes[i] for i in self.predict_proba(df, source).argmax(-1)]

    def predict_csv(self, path: str, out: Optional[str] = None) -> str:
        """Predictions for every row of a CSV: the input columns plus `prediction` and one probability column
        a class. Written to `out` when given; the CSV text is returned either way."""
        df = read_csv(path)
        proba = self.predict_proba(df, source=str(path))
        res = df.copy()
        res["prediction"] = [self.classes[i] for i in proba.argmax(-1)]
        for i, c in enumerate(self.classes):
            res[f"probability_{c}"] = proba[:, i].round(6)
        buf = io.StringIO()
        res.to_csv(buf, index=False)
        text = buf.getvalue()
        if out:
            write_atomic(Path(out), text.encode())
        return text
