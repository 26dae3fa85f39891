"""loss_curve.png: train and validation loss per epoch, and train loss per optimizer step."""
from __future__ import annotations

from pathlib import Path

from .checkpoint import atomic_write


def plot_loss_curve(path: str | Path, history: list[dict], steps: list[list[float]] | None = None) -> Path:
    """Draw the curves with matplotlib's Agg renderer (no pyplot, no display) and write the PNG atomically."""
    from matplotlib.figure import Figure  # a bare Figure renders through Agg; it never touches pyplot state
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10 if steps else 5.5, 4), dpi=80)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.92, wspace=0.25)
    axes = fig.subplots(1, 2 if steps else 1, squeeze=False)[0]
    epochs = [h["epoch"] for h in history]
    ax = axes[0]
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if history and "val_loss" in history[0]:
        ax.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    ax.set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    if steps:
        ax = axes[1]
        ax.plot([s[0] for s in steps], [s[1] for s in steps], lw=1)
        ax.set(xlabel="optimizer step", ylabel="train loss", title="loss per step")
        ax.grid(alpha=0.3)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
