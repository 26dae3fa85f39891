"""JSON mode: constrained decoding that makes a sequence's output one JSON object (OpenAI's
`response_format: {"type": "json_object"}`, Ollama's `format: "json"`), on llguidance (constraints.py).

The grammar is llguidance's JSON for the schema {"type": "object"}: RFC 8259 JSON whose top-level value is an
object, strings without raw control characters, and whitespace between tokens limited to one newline and 64
blanks a run (constraints.JSON_WHITESPACE) so that a model cannot fill max_tokens with blank lines. The
sequence ends ("stop") as soon as the object is closed.

`JsonConstraint(token_bytes)` is that constraint over a vocabulary given as a table of token bytes;
`JsonState` and `is_json_prefix` check a text byte by byte against the same grammar (a table of the 256 bytes).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from .constraints import JSON_OBJECT, GrammarConstraint, Grammars


def JsonConstraint(token_bytes: Sequence[bytes | None]) -> GrammarConstraint:  # noqa: N802 - a constructor
    """JSON mode over a vocabulary: token_bytes[t] is token t's bytes, None for tokens that are never allowed."""
    return Grammars.of_table(token_bytes).constraint(JSON_OBJECT)


@lru_cache(maxsize=1)
def _bytes() -> Grammars:
    return Grammars.of_table([bytes([b]) for b in range(256)])


class JsonState:
    """A text checked byte by byte: `feed(data)` returns a new state, or None when data makes the prefix
    invalid; `done` when the top-level object is closed."""

    def __init__(self, constraint: GrammarConstraint | None = None):
        self.constraint = constraint or _bytes().constraint(JSON_OBJECT)

    @property
    def done(self) -> bool:
        return self.constraint.done

    def feed(self, data: bytes) -> "JsonState | None":
        c = GrammarConstraint(self.constraint.matcher.deep_copy(), self.constraint.vocab_size)
        for b in data:
            if c.done and b in _BLANKS:
                continue           # after the object, blanks change nothing (the engine stops at the object)
            if not c.allows(b):
                return None
            c.advance(b)
        return JsonState(c)


_BLANKS = b" \t\n\r"


def is_json_prefix(text: str | bytes) -> bool:
    """Whether text can still be completed into a JSON object (as JSON mode allows it)."""
    return JsonState().feed(text.encode("utf-8") if isinstance(text, str) else text) is not None
