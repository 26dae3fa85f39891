"""Incremental detokenisation for streaming.

Decoding one token at a time is wrong twice over: a byte-level BPE token can hold part of a UTF-8
character (it decodes to U+FFFD until the rest arrives), and a SentencePiece decoder drops the leading
space (the '▁') of whatever token comes first in a decode call. So, as vLLM's and TGI's
detokenize_incrementally do, decode a small window of tokens twice, with and without the new ones,
and emit only the new suffix, holding back while it ends in U+FFFD."""
from __future__ import annotations

PROMPT_WINDOW = 5   # prompt tokens decoded ahead of the first generated one, for its leading space


class IncrementalDecoder:
    """push(token_id) -> the new text. Works with anything that has
    decode(ids, skip_special_tokens=...) -> str, e.g. a `tokenizers.Tokenizer`.

    Without prompt_ids the deltas, followed by flush(), join to exactly
    tokenizer.decode(generated_ids). With prompt_ids the first delta keeps the space that joins it to
    the prompt (' world' after 'Hello')."""

    def __init__(self, tokenizer, prompt_ids=(), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
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
        """What is still held back at the end: text ending in an incomplete or invalid character."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        seen = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        text = self._decode(self.tokens[self.prefix_offset:])
        if len(text) <= len(seen) or (text.endswith("\ufffd") and not final):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        # drop what no window will look at again, so a long generation stays cheap
        del self.tokens[:self.prefix_offset]
        self.read_offset -= self.prefix_offset
        self.prefix_offset = 0
        return text[len(seen):]
