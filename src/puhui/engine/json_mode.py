"""JSON mode: constrained decoding that makes a sequence's output one JSON object (OpenAI's
`response_format: {"type": "json_object"}`, Ollama's `format: "json"`).

`JsonState` is a byte-level pushdown automaton of RFC 8259 JSON whose top-level value is an object; it says
whether a prefix can still grow into a valid document. `JsonConstraint` holds one sequence's state and the
bytes of every token of the vocabulary (`token_bytes`), and answers "does token t keep the output valid?".
The sampler (sampling.py) draws as usual and, for a constrained row, walks its candidates from the best down
to the first allowed one: greedy takes the most likely allowed token; sampling keeps the exponential race's
order, which is a draw from the distribution restricted to the allowed tokens. The sequence ends ("stop") as
soon as the object is closed, so no end-of-text token is needed, and none is allowed before.

Whitespace between tokens is limited (one newline and 64 blanks a run, as llama.cpp's json grammar limits it)
so that a model cannot fill max_tokens with blank lines; strings may hold any character but the control
characters JSON forbids.
"""
from __future__ import annotations

from collections.abc import Sequence

# modes: a small int each (cheap to copy and compare)
START, VALUE, ARRAY_FIRST, KEY_FIRST, KEY, COLON, AFTER, STRING, ESCAPE, UNICODE, LITERAL, DONE = range(12)
NUM_MINUS, NUM_ZERO, NUM_INT, NUM_DOT, NUM_FRAC, NUM_E, NUM_E_SIGN, NUM_EXP = range(12, 20)
NUMBER_ENDS = {NUM_ZERO, NUM_INT, NUM_FRAC, NUM_EXP}     # a number may stop here
MAX_NEWLINES, MAX_BLANKS = 1, 64                            # per whitespace run
WS = {0x20: 0, 0x09: 0, 0x0A: 1}                            # byte -> newlines it counts
ESCAPES = set(b'"\\/bfnrtu')
HEX = set(b"0123456789abcdefABCDEF")
DIGITS = set(b"0123456789")
LITERALS = {ord("t"): b"rue", ord("f"): b"alse", ord("n"): b"ull"}


class JsonState:
    """An incremental validator. `feed(data)` returns a new state, or None when data makes the prefix invalid.

    The state: mode, the stack of open containers (a tuple of b'{' / b'['), whether the string being read is
    a key, a mode-specific value (hex digits left in \\u, the rest of a literal) and the whitespace run."""

    __slots__ = ("mode", "stack", "key", "aux", "newlines", "blanks")

    def __init__(self, mode=START, stack=(), key=False, aux=None, newlines=0, blanks=0):
        self.mode, self.stack, self.key, self.aux, self.newlines, self.blanks = mode, stack, key, aux, newlines, blanks

    @property
    def done(self) -> bool:
        """The top-level object is closed: the document is complete."""
        return self.mode == DONE

    def feed(self, data: bytes) -> "JsonState | None":
        s = JsonState(self.mode, self.stack, self.key, self.aux, self.newlines, self.blanks)
        for b in data:
            if not s._step(b):
                return None
        return s

    def _after_value(self) -> None:
        self.mode = AFTER if self.stack else DONE

    def _step(self, b: int) -> bool:  # noqa: C901 - one automaton, one place
        m = self.mode
        if m == STRING:
            if b == 0x22:                                   # "
                if self.key:
                    self.mode, self.key = COLON, False
                else:
                    self._after_value()
            elif b == 0x5C:                                 # backslash
                self.mode = ESCAPE
            elif b < 0x20:
                return False
            return True
        if m == ESCAPE:
            if b not in ESCAPES:
                return False
            self.mode, self.aux = (UNICODE, 4) if b == ord("u") else (STRING, None)
            return True
        if m == UNICODE:
            if b not in HEX:
                return False
            self.aux -= 1
            if self.aux == 0:
                self.mode, self.aux = STRING, None
            return True
        if m == LITERAL:
            if b != self.aux[0]:
                return False
            self.aux = self.aux[1:]
            if not self.aux:
                self.aux = None
                self._after_value()
            return True
        if m >= NUM_MINUS:
            nxt = _number_step(m, b)
            if nxt is not None:
                self.mode = nxt
                return True
            if m not in NUMBER_ENDS:
                return False
            self._after_value()                             # the number ended; this byte is structural
            return self._step(b)
        # structural modes: whitespace first
        if b in WS:
            self.newlines += WS[b]
            self.blanks += 1 - WS[b]
            return self.newlines <= MAX_NEWLINES and self.blanks <= MAX_BLANKS
        self.newlines = self.blanks = 0
        if m == DONE:
            return False
        if m == START:
            if b != ord("{"):
                return False
            self.stack, self.mode = (b"{",), KEY_FIRST
            return True
        if m in (KEY_FIRST, KEY):
            if b == 0x22:
                self.mode, self.key = STRING, True
                return True
            return m == KEY_FIRST and b == ord("}") and self._close(b"{")
        if m == COLON:
            if b != ord(":"):
                return False
            self.mode = VALUE
            return True
        if m == AFTER:
            top = self.stack[-1]
            if b == ord(","):
                self.mode = KEY if top == b"{" else VALUE
                return True
            return self._close(top) if b == (ord("}") if top == b"{" else ord("]")) else False
        # VALUE or ARRAY_FIRST
        if m == ARRAY_FIRST and b == ord("]"):
            return self._close(b"[")
        if b == ord("{"):
            self.stack, self.mode = self.stack + (b"{",), KEY_FIRST
        elif b == ord("["):
            self.stack, self.mode = self.stack + (b"[",), ARRAY_FIRST
        elif b == 0x22:
            self.mode = STRING
        elif b == ord("-"):
            self.mode = NUM_MINUS
        elif b in DIGITS:
            self.mode = NUM_ZERO if b == ord("0") else NUM_INT
        elif b in LITERALS:
            self.mode, self.aux = LITERAL, LITERALS[b]
        else:
            return False
        return True

    def _close(self, kind: bytes) -> bool:
        if not self.stack or self.stack[-1] != kind:
            return False
        self.stack = self.stack[:-1]
        self._after_value()
        return True


def _number_step(m: int, b: int) -> int | None:
    """The next number mode after byte b, or None when b does not continue the number."""
    digit = b in DIGITS
    if m == NUM_MINUS:
        return (NUM_ZERO if b == ord("0") else NUM_INT) if digit else None
    if m in (NUM_ZERO, NUM_INT):
        if digit:
            return NUM_INT if m == NUM_INT else None         # no leading zeros
        return NUM_DOT if b == ord(".") else NUM_E if b in (ord("e"), ord("E")) else None
    if m == NUM_DOT:
        return NUM_FRAC if digit else None
    if m == NUM_FRAC:
        return NUM_FRAC if digit else NUM_E if b in (ord("e"), ord("E")) else None
    if m == NUM_E:
        return NUM_EXP if digit else NUM_E_SIGN if b in (ord("+"), ord("-")) else None
    if m == NUM_E_SIGN:
        return NUM_EXP if digit else None
    return NUM_EXP if digit else None                       # NUM_EXP


def is_json_prefix(text: str | bytes) -> bool:
    """Whether text can still be completed into a JSON object (as JSON mode allows it)."""
    return JsonState().feed(text.encode("utf-8") if isinstance(text, str) else text) is not None


class JsonConstraint:
    """One sequence's JSON state over a vocabulary: token_bytes[t] is token t's bytes, None for tokens that are
    never allowed (special tokens such as the end of text)."""

    def __init__(self, token_bytes: Sequence[bytes | None]):
        self.token_bytes = token_bytes
        self.state = JsonState()
        self._cache: dict[int, JsonState | None] = {}   # the next states of the tokens tried at this step

    @property
    def done(self) -> bool:
        return self.state.done

    def allows(self, token: int) -> bool:
        if token not in self._cache:
            data = self.token_bytes[token] if 0 <= token < len(self.token_bytes) else None
            self._cache[token] = None if not data else self.state.feed(data)
        return self._cache[token] is not None

    def advance(self, token: int) -> None:
        """Take the chosen token (one that `allows` accepted)."""
        if not self.allows(token):
            raise ValueError(f"token {token} does not continue the JSON output")
        self.state = self._cache[token]
        self._cache = {}
