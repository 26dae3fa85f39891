"""One progress callback type for every long operation, and its rich renderer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class Progress:
    task: str                      # what is running, e.g. "epoch 3/10" or "sha256 model.gguf"
    done: float                    # units completed in this task
    total: Optional[float] = None  # units in this task, None when unknown
    info: dict = field(default_factory=dict)  # extra numbers to show: loss, samples/s ...
    finished: bool = False


ProgressFn = Callable[[Progress], None]


def silent(_: Progress) -> None:
    return None


class RichProgress:
    """Renders Progress events as rich progress bars, one bar per task name. Use as a context manager."""

    def __init__(self, transient: bool = False):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as _P, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self._bars = _P(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                        transient=transient)
        self._ids: dict[str, int] = {}

    def __enter__(self) -> "RichProgress":
        self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()

    def console_print(self, *args, **kw) -> None:
        kw.setdefault("soft_wrap", True)
        self._bars.console.print(*args, **kw)

    def __call__(self, p: Progress) -> None:
        info = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.info.items())
        if p.task not in self._ids:
            self._ids[p.task] = self._bars.add_task(p.task, total=p.total, info=info)
        tid = self._ids[p.task]
        self._bars.update(tid, completed=p.done, total=p.total, info=info)
        if p.finished:
            self._bars.update(tid, completed=p.total if p.total is not None else p.done)
