"""Log-probabilities in OpenAI's two shapes, and the exact bytes and display text of each token.

/v1/completions (legacy): {"tokens", "token_logprobs", "top_logprobs": [{token: logprob}], "text_offset"}.
/v1/chat/completions: {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}.
A token that holds part of a UTF-8 character shows as OpenAI shows it, "bytes:\\xe5\\x8c"; its `bytes` are exact.
The stop token that ended a choice (eos, end of turn) is not in the text, so not in its logprobs either.
"""
from __future__ import annotations

import codecs
import re


def shown(logprobs, choice) -> list:
    """The logprobs of the tokens the text shows: a stop token (eos, end of turn) is not shown."""
    logprobs = list(logprobs or [])
    stop = choice.stop_reason
    if choice.finish_reason == "stop" and isinstance(stop, int) and not isinstance(stop, bool) and logprobs:
        logprobs = logprobs[:-1]
    return logprobs


def legacy_logprobs(tokens: "TokenText", entries, choice, start: int, top: int, first_id: int | None = None) -> dict:
    """/v1/completions' logprobs of `entries` (TokenLogprob, or None for the first echoed prompt token, whose
    id is first_id); text offsets count from `start` (characters)."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    at = start
    for e in shown(entries, choice):
        token_id = e.token_id if e is not None else first_id
        out["tokens"].append(tokens.text(token_id))
        out["token_logprobs"].append(None if e is None else e.logprob)
        out["top_logprobs"].append(None if e is None else {tokens.text(t): lp for t, lp in e.top[:top]})
        out["text_offset"].append(at)
        at += len(decoder.decode(tokens.bytes(token_id)))
    return out


def chat_logprobs(tokens: "TokenText", entries, choice) -> list[dict]:
    """/v1/chat/completions' logprobs.content of `entries`."""
    out = []
    for e in shown(entries, choice):
        if e is None:
            continue
        out.append({"token": tokens.text(e.token_id), "logprob": e.logprob, "bytes": list(tokens.bytes(e.token_id)),
                    "top_logprobs": [{"token": tokens.text(i), "logprob": lp, "bytes": list(tokens.bytes(i))}
                                     for i, lp in e.top]})
    return out


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character that stands for each byte -> the byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


_BYTE_DECODER = _byte_decoder()
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")   # SentencePiece's byte fallback
CACHE_LIMIT = 200_000


class TokenText:
    """A token's exact bytes and its display string, cached per model (`cache` is shared by its requests)."""

    def __init__(self, tokenizer, cache: dict):
        self.tokenizer = tokenizer
        self.cache = cache

    def _entry(self, token_id: int) -> tuple[str, bytes]:
        hit = self.cache.get(token_id)
        if hit is not None:
            return hit
        text = self.tokenizer.decode([token_id], skip_special_tokens=False)
        if "\ufffd" not in text:
            raw = text.encode("utf-8")
        else:
            piece = self.tokenizer.id_to_token(token_id) or ""
            m = _BYTE_TOKEN.fullmatch(piece)
            if m:
                raw = bytes([int(m.group(1), 16)])
            elif piece and all(ch in _BYTE_DECODER for ch in piece):
                raw = bytes(_BYTE_DECODER[ch] for ch in piece)
            else:
                raw = text.encode("utf-8")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = "bytes:" + "".join(f"\\x{b:02x}" for b in raw)
        entry = (text, raw)
        if len(self.cache) < CACHE_LIMIT:
            self.cache[token_id] = entry
        return entry

    def text(self, token_id: int) -> str:
        return self._entry(token_id)[0]

    def bytes(self, token_id: int) -> bytes:
        return self._entry(token_id)[1]
