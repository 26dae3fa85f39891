"""One callback type for every long operation: its progress and its messages (a line to show: what data was
read, an epoch's loss, a skipped model), and its rich renderer.

    def train(..., progress: ProgressFn | None = None):
        say(progress, "data: 569 rows")                      # a message
        progress(Progress("epoch 3/10", 3, 10, {"loss": 0.1}))   # a bar
"""
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
    message: bool = False          # a line to show (task is its text), not a bar


ProgressFn = Callable[[Progress], None]


def silent(_: Progress) -> None:
    return None


def say(progress: Optional[ProgressFn], text: str) -> None:
    """Send a message through a progress callback (nothing when there is none)."""
    if progress is not None:
        progress(Progress(text, 0, None, message=True))


def messages_to(write: Callable[[str], None]) -> ProgressFn:
    """A callback that writes messages (and nothing of the bars): for a quiet caller or a JSON-printing CLI."""
    def fn(p: Progress) -> None:
        if p.message:
            write(p.task)
    return fn


class RichProgress:
    """Renders Progress events as rich progress bars, one bar per task name. Use as a context manager."""

    def __init__(self, transient: bool = False, messages: Optional[Callable[[str], None]] = None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as _P, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)
        self._bars = _P(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                        transient=transient)
        self._ids: dict[str, int] = {}
        self._messages = messages     # where messages go; default: printed above the bars

    def __enter__(self) -> "RichProgress":
        self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self._bars.stop()

    def console_print(self, *args, **kw) -> None:
        kw.setdefault("soft_wrap", True)
        self._bars.console.print(*args, **kw)

    def __call__(self, p: Progress) -> None:
        if p.message:
            if self._messages is not None:
                self._messages(p.task)
            else:
                self.console_print(p.task, markup=False, highlight=False)
            return
        info = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.info.items())
        if p.task not in self._ids:
            self._ids[p.task] = self._bars.add_task(p.task, total=p.total, info=info)
        tid = self._ids[p.task]
        self._bars.update(tid, completed=p.done, total=p.total, info=info)
        if p.finished:
            self._bars.update(tid, completed=p.total if p.total is not None else p.done)
