"""Task objects: what `puhui.load(name)` returns, one class per task kind of the store's manifest.

The one registry of task kind -> class: the Python API, the CLI and the server ask it (`load`, `task_of`,
`check_task`) instead of switching on task strings themselves.
"""
from __future__ import annotations

from importlib import import_module

from ..errors import BadInput, Unsupported

# task kind (store.TASKS) -> (module, class) of the object that opens it
REGISTRY: dict[str, tuple[str, str]] = {
    "text-generation": ("text", "TextGenerator"),
    "embeddings": ("text", "Embedder"),
    "classification": ("classification", "Classifier"),
    "recommendation": ("recommendation", "Recommender"),
    "detection": ("detection", "Detector"),
    "transcription": ("speech", "Transcriber"),
    "speech": ("speech", "Voice"),
}


def task_class(task: str):
    """The class that opens models of a task kind (Unsupported for a kind no class opens)."""
    if task not in REGISTRY:
        raise Unsupported(f"puhui cannot open {task!r} models yet (it opens: {', '.join(REGISTRY)})", param="task")
    module, cls = REGISTRY[task]
    return getattr(import_module(f"{__name__}.{module}"), cls)


def manifest(name: str, task: str | tuple[str, ...] | None = None, what: str = ""):
    """The store's manifest of `name` (an alias is resolved), checked to be a `task` model (or one of several
    kinds) when a task is given: BadInput naming both kinds otherwise. `what` says who needs it."""
    from .. import store

    m = store.get(name)
    check_task(m, task, what)
    return m


def check_task(m, task: str | tuple[str, ...] | None, what: str = "") -> None:
    """BadInput (param "model") unless manifest m is of the task kind, or one of the kinds, asked for."""
    from ..store import task_name

    if task is None:
        return
    kinds = tuple(task_name(t) for t in ((task,) if isinstance(task, str) else task))
    if m.task not in kinds:
        want = " or ".join(kinds)
        who = f"; {what} needs a {want} model" if what else f", not a {want} one"
        raise BadInput(f"model {m.name!r} is a {m.task} model{who}", param="model")


def load(name, task: str | tuple[str, ...] | None = None, what: str = "", **options):
    """The task object of a store model (a name, an alias, or a manifest already read); `options` go to its
    constructor (dtype, device, max_batch ...). With `task` (a kind, or a tuple of kinds), a model of another
    task is refused; `what` names who asked, for that message."""
    from ..settings import apply_threads

    if isinstance(name, str):
        m = manifest(name, task, what)
    else:
        m = name
        check_task(m, task, what)
    apply_threads()
    if hasattr(m, "verify"):
        m.verify()      # every file as its manifest records it (cheap: stat, a full hash once): never a silent answer
    adapter = getattr(m, "extra", {}).get("adapter")
    if isinstance(adapter, dict):            # a LoRA adapter: its base, running it
        return _adapted(m, adapter, options)
    return task_class(m.task)(m, **options)


def _adapted(m, adapter: dict, options: dict):
    """The base's TextGenerator running adapter manifest m; BadInput when the base is gone or has changed."""
    from ..errors import ModelNotFound

    try:
        base = manifest(adapter.get("base") or "", "text-generation")
    except ModelNotFound:
        raise BadInput(f"adapter {m.name!r}: its base {adapter.get('base')!r} is not in the store", param="model") \
            from None
    from ..store import adapter_problem

    problem = adapter_problem(m, base)
    if problem:
        raise BadInput(f"adapter {m.name!r}: {problem}: retrain it, or import the base it was made on",
                       param="model")
    gen = load(base, **options)
    gen.use_adapter(m.name, m.folder)
    return gen
