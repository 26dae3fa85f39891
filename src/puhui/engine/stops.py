"""Stop strings over streamed text, including a stop string split across tokens."""
from __future__ import annotations

from ..errors import BadInput


class StopChecker:
    """Feed generated text as it comes; get back what is safe to show.

    The longest tail that could still become a stop string is held back until the next piece decides
    it. Output ends just before the first stop string, which is not included (as OpenAI does);
    `matched` then names it. At the end of a generation that did not stop, `flush` returns the held tail."""

    def __init__(self, stops=()):
        self.stops = tuple(stops)
        for s in self.stops:
            if not isinstance(s, str) or not s:
                raise BadInput(f"stop must be a non-empty string or a list of them, got {s!r}")
        self.held = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, stopped). After a stop, feeding more returns ("", True)."""
        if self.stopped:
            return "", True
        buffer = self.held + text
        hits = [(buffer.find(s), s) for s in self.stops if s in buffer]
        if hits:
            at, self.matched = min(hits, key=lambda hit: hit[0])   # the earliest; the first listed on a tie
            self.held, self.stopped = "", True
            return buffer[:at], True
        keep = self._partial_tail(buffer)
        self.held = buffer[len(buffer) - keep:]
        return buffer[:len(buffer) - keep], False

    def flush(self) -> str:
        """The held-back tail, for when the generation ends without a stop string."""
        out, self.held = self.held, ""
        return out

    def _partial_tail(self, buffer: str) -> int:
        """Length of the longest suffix of buffer that is a proper prefix of some stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(buffer)), best, -1):
                if buffer.endswith(s[:n]):
                    best = n
                    break
        return best
