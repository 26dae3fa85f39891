"""Constrained decoding: what a sequence's output must be, compiled by llguidance into a matcher over the
model's vocabulary.

A `Structure` says what is wanted: one JSON object (JSON mode, OpenAI's `json_object`), a document of a JSON
Schema (`json_schema`), a full match of a regular expression, or a sentence of a grammar (Lark, or llama.cpp's
GBNF, which llguidance converts). llguidance is the Rust engine that vLLM, SGLang and llama.cpp use; we chose it
over xgrammar and outlines-core for its coverage (JSON Schema incl. anyOf, $ref, formats; regex; Lark and GBNF
grammars in one engine), its lazy lexer (a matcher starts in under a millisecond, so per-request schemas cost
nothing up front) and its cheap single-token check, which suits our sampler.

The sampler (sampling.py) draws as usual and, for a constrained row, checks its candidates best first
(`allows`: llguidance's validate_tokens, under a microsecond a token); only when the first candidates are all
refused does it take the row's whole token mask (`mask`, ~70 us for a 49k vocabulary). Greedy thus takes the
most likely allowed token and sampling keeps its draw order: a draw from the distribution restricted to the
allowed tokens. Other rows of the batch are untouched. A sequence ends ("stop") as soon as its matcher can
take nothing more (a closed JSON object); end-of-text is allowed only where the structure may end. If no token
at all is allowed (a vocabulary that cannot spell what must come next), the sequence ends there (finish
reason "stop") instead of raising.
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass

import torch

from ..errors import BadInput, Unsupported

KINDS = ("json_object", "json_schema", "regex", "lark", "gbnf")
# JSON whitespace between tokens: one line break and a bounded run of blanks (as llama.cpp's json grammar bounds
# it), so that a model cannot fill max_tokens with blank lines
JSON_WHITESPACE = r"[\x20\x09]{0,64}(\x0A[\x20\x09]{0,64})?"
# JSON mode: RFC 8259 JSON whose top-level value is an object (every escape, \/ and lone surrogates included,
# which llguidance's own JSON leaves out), whitespace bounded as above, and nothing after the object
JSON_OBJECT_LARK = r"""
start: WS object
?value: object | array | STRING | NUMBER | "true" | "false" | "null"
object: "{" WS (pair ("," WS pair)*)? "}"
pair: STRING WS ":" WS value WS
array: "[" WS (value WS ("," WS value WS)*)? "]"
STRING: /"([^"\\\x00-\x1F]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/
NUMBER: /-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/
WS: /""" + JSON_WHITESPACE + """/
"""
# JSON schemas: llguidance's JSON, with \uXXXX escapes too (its default leaves them out; it never takes \/)
JSON_OPTIONS = {"whitespace_flexible": True, "whitespace_pattern": JSON_WHITESPACE,
                "json_allowed_escapes": "nrbtf\\\"u", "json_allow_general_unicode_escapes": True}
_PARAM = {"json_object": "response_format", "json_schema": "response_format", "regex": "regex",
          "lark": "grammar", "gbnf": "grammar"}


@dataclass(frozen=True)
class Structure:
    """What an output must be: kind (KINDS) and spec (the schema as JSON text, the regex, the grammar)."""

    kind: str
    spec: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise BadInput(f"structure kind {self.kind!r}: use one of {', '.join(KINDS)}", param="structure")
        if self.kind != "json_object" and not isinstance(self.spec, str):
            raise BadInput(f"a {self.kind} structure needs its text", param=_PARAM[self.kind])

    @classmethod
    def json_schema(cls, schema) -> "Structure":
        """The structure of a JSON Schema (a dict, or its JSON text)."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as e:
                raise BadInput(f"the JSON schema is not JSON: {e}", param="response_format") from None
        if not isinstance(schema, dict):
            raise BadInput("a JSON schema is an object", param="response_format")
        return cls("json_schema", json.dumps(schema))   # key order kept: properties come in the schema's order

    @property
    def param(self) -> str:
        """The request field that carries it (for errors)."""
        return _PARAM[self.kind]

    def grammar(self) -> str:
        """llguidance's grammar text of this structure."""
        llg = _llguidance()
        if self.kind == "json_object":
            return llg.LLMatcher.grammar_from_lark(JSON_OBJECT_LARK)
        if self.kind == "json_schema":
            # a run of whitespace may come first, then the document (Lark's %json embeds llguidance's JSON)
            schema = json.loads(self.spec)
            schema = {**schema, "x-guidance": {**schema.get("x-guidance", {}), **JSON_OPTIONS}}
            return llg.LLMatcher.grammar_from_lark(f"start: /{JSON_WHITESPACE}/ document\n"
                                                   f"document: %json {json.dumps(schema)}")
        if self.kind == "regex":
            return llg.LLMatcher.grammar_from_regex(self.spec)
        lark = self.spec if self.kind == "lark" else _gbnf_to_lark(self.spec)
        return llg.LLMatcher.grammar_from_lark(lark)


JSON_OBJECT = Structure("json_object")


class Grammars:
    """The compiled structures of one tokenizer: llguidance's view of the vocabulary (made once, ~0.1 s for
    49k tokens) and a cache of checked grammars, so that n sequences or repeated requests with one schema
    compile it once. Thread-safe (the server prepares requests on several threads)."""

    def __init__(self, token_bytes, encode, eos_ids, bos_id: int | None = None):
        """token_bytes[t]: token t's bytes (None for special tokens); encode(text) -> token ids; eos_ids: the
        tokens that end a sequence (allowed where the structure may end)."""
        llg = _llguidance()
        self.token_bytes = token_bytes
        self.vocab_size = len(token_bytes)
        eos = sorted(int(t) for t in eos_ids)
        if not eos:
            raise BadInput("constrained decoding needs an end-of-text token", param="structure")
        vocab = _Vocabulary(token_bytes, encode, eos[0], bos_id)
        self.llg_tokenizer = llg.LLTokenizer(llg.TokenizerWrapper(vocab), n_vocab=self.vocab_size, eos_token=eos)
        self._grammars: dict[Structure, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, tokenizer, eos_ids) -> "Grammars":
        """The grammars of one of our tokenizers (text.tokenizer.Tokenizer: token_bytes() and encode())."""
        return cls(tokenizer.token_bytes(), lambda text: tokenizer.encode(text, add_special_tokens=False),
                   eos_ids or [getattr(tokenizer, "eos_id", None)], getattr(tokenizer, "bos_id", None))

    @classmethod
    def of_table(cls, token_bytes) -> "Grammars":
        """Grammars over a plain table of token bytes (tokenized greedily, longest token first) and one added
        end-of-text token: for checking texts byte by byte (`table = [bytes([b]) for b in range(256)]`)."""
        table = list(token_bytes) + [None]
        return cls(table, _greedy(table), [len(table) - 1])

    def compile(self, structure: Structure) -> str:
        """The checked grammar of a structure; BadInput naming what the engine cannot take."""
        with self._lock:
            grammar = self._grammars.get(structure)
        if grammar is not None:
            return grammar
        llg = _llguidance()
        try:
            grammar = structure.grammar()
        except ValueError as e:
            raise BadInput(f"{structure.param}: {e}", param=structure.param) from None
        error = llg.LLMatcher.validate_grammar(grammar, self.llg_tokenizer)
        if error and not error.startswith("WARNING"):
            what = {"json_object": "JSON mode", "json_schema": "the JSON schema", "regex": "the regular expression",
                    "lark": "the grammar", "gbnf": "the grammar"}[structure.kind]
            reason = re.sub(r"^at \d+\(\d+\): ", "", error.strip().splitlines()[0])   # the first line says it
            raise BadInput(f"{structure.param}: {what} cannot be used for constrained decoding: {reason}",
                           param=structure.param)
        with self._lock:
            self._grammars[structure] = grammar
        return grammar

    def constraint(self, structure: Structure) -> "GrammarConstraint":
        grammar = self.compile(structure)
        return GrammarConstraint(_llguidance().LLMatcher(self.llg_tokenizer, grammar), self.vocab_size)


class GrammarConstraint:
    """One sequence's matcher: `allows(t)`, `advance(t)`, `mask()`, `done`."""

    def __init__(self, matcher, vocab_size: int):
        self.matcher = matcher
        self.vocab_size = vocab_size
        if matcher.is_error():
            raise BadInput(f"the structure cannot start: {matcher.get_error()}", param="response_format")

    @property
    def done(self) -> bool:
        """Nothing more can be added: the output is complete."""
        return self.matcher.is_stopped()

    def allows(self, token: int) -> bool:
        return 0 <= token < self.vocab_size and self.matcher.validate_tokens([token]) == 1

    def advance(self, token: int) -> None:
        """Take the chosen token (one that `allows` accepted)."""
        if not self.matcher.consume_token(token):
            raise ValueError(f"token {token} does not continue the constrained output: {self.matcher.get_error()}")

    def mask(self) -> torch.Tensor:
        """bool [vocab]: the tokens allowed next."""
        bits = torch.frombuffer(bytearray(self.matcher.compute_bitmask()), dtype=torch.uint8)
        shifts = torch.arange(8, dtype=torch.uint8)
        return ((bits[:, None] >> shifts) & 1).flatten()[:self.vocab_size].bool()


class _Vocabulary:
    """What llguidance's TokenizerWrapper reads: the bytes of every token (b"" for special ones, which are
    never allowed except end-of-text where the structure may end) and a way to tokenize text."""

    def __init__(self, token_bytes, encode, eos: int, bos: int | None):
        self._encode = encode
        self.tokens = [b if b is not None else b"" for b in token_bytes]
        self.special_token_ids = [i for i, b in enumerate(token_bytes) if b is None]
        self.eos_token_id = eos
        self.bos_token_id = bos

    def __call__(self, text):
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return list(self._encode(text))


def _greedy(table):
    """encode(text) for a table of token bytes: the longest token that matches, left to right."""
    by_bytes = {b: i for i, b in enumerate(table) if b}
    longest = max((len(b) for b in by_bytes), default=1)

    def encode(text: str) -> list[int]:
        data, out, i = text.encode("utf-8"), [], 0
        while i < len(data):
            for n in range(min(longest, len(data) - i), 0, -1):
                t = by_bytes.get(data[i:i + n])
                if t is not None:
                    out.append(t)
                    i += n
                    break
            else:
                i += 1    # a byte no token spells: skipped
        return out
    return encode


def _gbnf_to_lark(gbnf: str) -> str:
    _llguidance()
    from llguidance.gbnf_to_lark import gbnf_to_lark

    try:
        return gbnf_to_lark(gbnf)
    except Exception as e:  # noqa: BLE001 - the converter's own parse errors
        raise BadInput(f"the GBNF grammar does not parse: {e}", param="grammar") from None


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise Unsupported("constrained decoding needs llguidance: pip install llguidance") from None
    return llguidance
