"""Task objects: what `puhui.load(name)` returns, one per task kind in the store's manifest."""
from __future__ import annotations

from ..errors import Unsupported


def load(name: str, **options):
    """The task object of a store model; `options` go to its constructor (dtype, device, max_batch ...)."""
    from .. import store
    from ..settings import apply_threads

    apply_threads()
    m = store.get(name)
    if m.task == "classification":
        from .classification import Classifier
        return Classifier(m, **options)
    if m.task == "text-generation":
        from .text import TextGenerator
        return TextGenerator(m, **options)
    if m.task == "embeddings":
        from .text import Embedder
        return Embedder(m, **options)
    if m.task == "recommendation":
        from .recommendation import Recommender
        return Recommender(m, **options)
    if m.task == "detection":
        from .detection import Detector
        return Detector(m, **options)
    if m.task == "transcription":
        from .speech import Transcriber
        return Transcriber(m, **options)
    if m.task == "speech":
        from .speech import Voice
        return Voice(m, **options)
    raise Unsupported(f"model {m.name!r} has task {m.task!r}, which puhui.load cannot open yet")
