"""Task objects: what `puhui.load(name)` returns, one per task kind in the store's manifest."""
from __future__ import annotations

from ..errors import Unsupported


def load(name: str):
    from .. import store

    m = store.get(name)
    if m.task == "classification":
        from .classification import Classifier
        return Classifier(m)
    raise Unsupported(f"model {m.name!r} has task {m.task!r}, which puhui.load cannot open yet")
