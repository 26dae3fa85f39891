"""The one shape of an explanation, whatever the task (CLI --json, POST /v1/explanations, model.explain()):

    {"model", "task", "method", "target", "prediction", "base_value",
     "attributions": [{"token" | "feature" | "region" | "field" | "word": ..., "value": ..., ...}],
     "forward_passes", "seconds", "budget"}

`value` is the attribution of that input part to `target`'s score: `base_value + sum(values) == prediction`
for the methods that are complete (exact SHAP, integrated gradients to convergence). `budget` is what the
caller allowed (samples or steps), `forward_passes` what the method spent."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from importlib import import_module
from typing import Any

from ..errors import BadInput, Unsupported

# the unit a task's attributions are about
UNITS = {"classification": "feature", "text-generation": "token", "embeddings": "token",
         "detection": "region", "recommendation": "field", "transcription": "word"}


@dataclass
class Explanation:
    model: str
    task: str
    method: str
    target: Any                      # what is explained: a class, a generated text, a box, an item ...
    prediction: Any                  # the model's score of the target on the input
    base_value: Any                  # the score on the baseline / expected value
    attributions: list[dict]         # one dict a unit (UNITS[task] key, "value", extras)
    forward_passes: int
    seconds: float
    budget: int | None = None
    extra: dict = field(default_factory=dict)   # task-specific additions (per output token values, boxes ...)

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        return {**d, **extra}

    def top(self, k: int = 5) -> list[dict]:
        """The k attributions largest in absolute value."""
        return sorted(self.attributions, key=lambda a: -abs(a["value"]))[:k]


def requires(module: str, extra: str = "explain"):
    """Import an optional library, or Unsupported naming what to install."""
    try:
        return import_module(module)
    except ImportError as e:
        raise Unsupported(f"explanations need {module!r}: pip install 'puhui[{extra}]' ({e})") from None


def check_budget(budget: int | None, default: int, limit: int | None = None, *, least: int = 1) -> int:
    """The budget to spend: the default when none is given; BadInput (param "budget") for a bad one or one over
    the limit (the server's), never a silent cut."""
    if budget is None:
        return default
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < least:
        raise BadInput(f"budget must be an integer >= {least}, got {budget!r}", param="budget")
    if limit is not None and budget > limit:
        raise BadInput(f"budget {budget} is over this server's limit of {limit}", param="budget")
    return budget


class Clock:
    """Seconds since creation, for an Explanation's `seconds`."""

    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.start, 4)
