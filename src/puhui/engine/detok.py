"""Incremental detokenisation for streaming.

Decoding one token at a time is wrong twice over: a byte-level BPE token can hold part of a UTF-8
character (it decodes to U+FFFD until the rest arrives), and a SentencePiece decoder drops the leading
space (the '▁') of whatever token comes first in a decode call. So, as vLLM's and TGI's
detokenize_incrementally do, decode a small window of tokens twice, with and without the new ones,
and emit only the new suffix, holding back while it ends in U+FFFD.

At the end (flush) a text that still ends in U+FFFD is looked at byte by byte: when the replacement stands
for an incomplete character (a sequence cut by max_tokens, a stop token or EOS in the middle of an emoji),
those bytes are dropped, never shown as U+FFFD; their tokens stay generated (and counted). A U+FFFD the
model wrote whole (the bytes EF BF BD), or bytes that no continuation could make valid, are kept."""
from __future__ import annotations

PROMPT_WINDOW = 5   # prompt tokens decoded ahead of the first generated one, for its leading space


class IncrementalDecoder:
    """push(token_id) -> the new text. Works with anything that has
    decode(ids, skip_special_tokens=...) -> str, e.g. a `tokenizers.Tokenizer`.

    Without prompt_ids the deltas, followed by flush(), join to exactly tokenizer.decode(generated_ids), less
    the U+FFFD of an incomplete last character when the tokenizer has token_bytes() -> [bytes | None] by id
    (puhui's Tokenizer; a bare `tokenizers.Tokenizer` keeps it). With prompt_ids the first delta keeps the
    space that joins it to the prompt (' world' after 'Hello')."""

    def __init__(self, tokenizer, prompt_ids=(), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer      # its token_bytes() (puhui's Tokenizer) finds an incomplete last character
        self.skip_special_tokens = skip_special_tokens
        self.tokens = list(prompt_ids)[-PROMPT_WINDOW:]
        self.prefix_offset = 0                 # start of the window that is decoded
        self.read_offset = len(self.tokens)    # text of tokens before this has been emitted

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        self.tokens.append(int(token_id))
        return self._advance(final=False)

    def flush(self) -> str:
        """What is still held back at the end, less an incomplete last character (its bytes are dropped)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        seen = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        text = self._decode(self.tokens[self.prefix_offset:])
        if final and text.endswith("\ufffd"):
            text = self._without_incomplete_end(text)
        if len(text) <= len(seen) or (text.endswith("\ufffd") and not final):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        # drop what no window will look at again, so a long generation stays cheap
        del self.tokens[:self.prefix_offset]
        self.read_offset -= self.prefix_offset
        self.prefix_offset = 0
        return text[len(seen):]

    def _without_incomplete_end(self, text: str) -> str:
        """The window's text without the bytes of an incomplete last character. They lie in the held tokens (a
        delta is emitted only when the text does not end in U+FFFD); the tokens before the one where they start
        are decoded by the tokenizer, the complete bytes of that token (byte-level BPE merges "a" + "\xf0")
        as UTF-8."""
        held = [self._bytes(t) for t in self.tokens[self.read_offset:]]
        if any(b is None for b in held):
            return text                          # a tokenizer that does not tell its tokens' bytes
        raw = b"".join(held)
        tail = incomplete_tail(raw)
        if not tail:
            return text                          # a U+FFFD of the text itself, or invalid bytes: kept
        j, covered = len(held), 0
        while covered < tail:                    # the first held token holding the tail's first byte
            j -= 1
            covered += len(held[j])
        complete = b"".join(held[j:])[:covered - tail]
        return self._decode(self.tokens[self.prefix_offset:self.read_offset + j]) + complete.decode("utf-8", "replace")

    def _bytes(self, token_id: int) -> bytes | None:
        """What token_id adds to the text, as bytes (b"" for a skipped special token); None when unknown."""
        table = getattr(self.tokenizer, "token_bytes", None)
        if table is None:
            return None
        table = table()
        raw = table[token_id] if 0 <= token_id < len(table) else None
        if raw is None:                          # a special token: nothing, or its text when special ones show
            return b"" if self.skip_special_tokens else self._decode([token_id]).encode("utf-8")
        return raw


def incomplete_tail(raw: bytes) -> int:
    """How many bytes at the end of `raw` begin a UTF-8 character that more bytes could complete (0 to 3).
    (Python's incremental decoder is no judge: it also holds back ED A0, the start of a surrogate, for
    surrogatepass.)"""
    for n in range(1, min(3, len(raw)) + 1):
        lead, rest = raw[-n], raw[len(raw) - n + 1:]
        if 0x80 <= lead <= 0xBF:
            continue                               # a continuation byte: the lead is further back
        size = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
        if n >= size:
            return 0                               # ASCII, an impossible lead, or a character long enough
        low, high = _SECOND.get(lead, (0x80, 0xBF))
        ok = all(0x80 <= b <= 0xBF for b in rest) and (not rest or low <= rest[0] <= high)
        return n if ok else 0
    return 0


# the leads whose second byte is narrower than 80..BF (no overlong forms, no surrogates, nothing past U+10FFFF)
_SECOND = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}
