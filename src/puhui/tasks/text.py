"""Text task objects: `TextGenerator` (text-generation models) and `Embedder` (sentence embeddings).

    gen = puhui.load("smollm2-135m-instruct")
    gen.generate("Once upon a time", max_tokens=32, temperature=0).text
    gen.chat("What is the capital of France?", temperature=0).text
    for delta in gen.stream([{"role": "user", "content": "Hi"}]): print(delta, end="")

    emb = puhui.load("all-minilm-l6-v2")
    emb.embed(["a sentence", "another"])          # np.ndarray float32 [2, 384]

Sampling keywords are SamplingParams' fields (max_tokens, temperature, top_k, top_p, min_p, repetition_penalty,
presence_penalty, frequency_penalty, logit_bias, stop, stop_token_ids, seed, n, logprobs, echo, ignore_eos).
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from ..engine.llm_engine import LLMEngine, check_context
from ..engine.sampling import SamplingParams
from ..engine.sequence import RequestOutput, TokenLogprob, Usage
from ..errors import BadInput, Unsupported

DEFAULT_MAX_TOKENS = 256
CACHE_STEP = 1024   # the engine's cache grows in steps of this many positions
_SAMPLING_FIELDS = {f.name for f in fields(SamplingParams)}


@dataclass
class Choice:
    index: int
    text: str
    tokens: list[int]
    finish_reason: str | None
    logprobs: list[TokenLogprob | None] | None = None


@dataclass
class GenerationResult:
    """One prompt's result. text / tokens / finish_reason / logprobs are those of the first choice;
    `choices` has all n."""

    text: str
    tokens: list[int]
    finish_reason: str | None
    usage: Usage
    choices: list[Choice]
    logprobs: list[TokenLogprob | None] | None = None
    prompt_tokens: list[int] | None = None

    @classmethod
    def from_output(cls, out: RequestOutput) -> "GenerationResult":
        choices = [Choice(c.index, c.text, c.token_ids, c.finish_reason, c.logprobs) for c in out.outputs]
        first = choices[0]
        return cls(first.text, first.tokens, first.finish_reason, out.usage, choices, first.logprobs,
                   out.prompt_token_ids)

    def __str__(self) -> str:
        return self.text


class TextGenerator:
    """A text-generation model from the store, generating through an LLMEngine.

    The engine's KV cache is sized to the work, not to the whole context window at once: it is made for
    the slots (up to `max_batch` sequences at once) and the length (in steps of CACHE_STEP tokens, up to
    `context_length`) that a call needs, and made anew, larger, only when a call needs more."""

    task = "text-generation"

    def __init__(self, manifest, dtype=None, device=None, max_batch: int = 8, context_length: int | None = None,
                 quant: str | None = None):
        from ..models.loader import load_causal_lm

        self.manifest = manifest
        self.name = getattr(manifest, "name", str(manifest))
        self.loaded = load_causal_lm(manifest, dtype=dtype, device=device, quant=quant)
        self.model = self.loaded.model
        self.tokenizer = self.loaded.tokenizer
        self.chat_template = self.loaded.chat_template
        limit = self.loaded.context_length
        if context_length is not None and not 1 <= context_length <= limit:
            raise BadInput(f"context_length {context_length} is outside the model's 1..{limit} tokens")
        self.context_length = context_length or limit
        if max_batch < 1:
            raise BadInput(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self._engine: LLMEngine | None = None
        self._outbox: dict[str, list[RequestOutput]] = {}   # outputs stepped out for another caller
        self._ids = itertools.count()

    def __repr__(self) -> str:
        return f"TextGenerator({self.name!r}, context_length={self.context_length})"

    @property
    def engine(self) -> LLMEngine:
        """The current engine; asked for before any call, one of max_batch slots over the whole context."""
        if self._engine is None:
            return self.engine_for(self.max_batch, self.context_length)
        return self._engine

    def engine_for(self, n_seqs: int = 1, n_tokens: int = 1) -> LLMEngine:
        """The engine, made anew when it has fewer than n_seqs slots (up to max_batch) or n_tokens positions.
        A stream still running on the old engine keeps it (engines over one model take turns)."""
        slots = min(self.max_batch, max(1, n_seqs))
        length = min(self.context_length, -(-max(n_tokens, 1) // CACHE_STEP) * CACHE_STEP)
        e = self._engine
        if e is None or e.max_batch < slots or e.context_length < length:
            if e is not None:
                slots, length = max(slots, e.max_batch), max(length, e.context_length)
            self._engine = e = LLMEngine(self.model, self.tokenizer, max_batch=slots, context_length=length,
                                        eos_ids=self.loaded.eos_ids)
        return e

    # ------------------------------------------------------------------------------------------ prompts

    def params(self, prompt_tokens: int = 0, chat: bool = False, **sampling) -> SamplingParams:
        """SamplingParams from keywords. Without max_tokens: 256, or what is left of the context if less.
        For chat, the template's end-of-turn tokens stop too."""
        unknown = sorted(set(sampling) - _SAMPLING_FIELDS)
        if unknown:
            raise BadInput(f"unknown sampling option {unknown[0]!r} (known: {', '.join(sorted(_SAMPLING_FIELDS))})")
        if sampling.get("max_tokens") is None:
            room = self.context_length - prompt_tokens
            sampling["max_tokens"] = min(DEFAULT_MAX_TOKENS, room) if room >= 1 else DEFAULT_MAX_TOKENS
        if chat:
            turn = self.loaded.end_of_turn_ids - self.loaded.eos_ids
            if turn and not sampling.get("ignore_eos"):
                sampling["stop_token_ids"] = tuple(sampling.get("stop_token_ids") or ()) + tuple(sorted(turn))
        return SamplingParams(**sampling)

    def render(self, messages) -> str:
        """The prompt the chat template makes of messages (a string is one user message)."""
        if not self.chat_template:
            raise Unsupported(f"model {self.name!r} has no chat template; use generate() with a plain prompt")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.tokenizer.render_chat(list(messages), add_generation_prompt=True)

    def _request(self, prompt, chat: bool, sampling: dict):
        """(token ids, params, text) of a text / token-id prompt, or of messages when chat; checked against
        the context window."""
        if chat:
            text = self.render(prompt)
            ids = self.tokenizer.encode(text, add_special_tokens=False)
        elif isinstance(prompt, str):
            text, ids = prompt, self.tokenizer.encode(prompt)
        else:
            text, ids = None, [int(t) for t in prompt]
        params = self.params(len(ids), chat=chat, **sampling)
        check_context(len(ids), params.max_tokens, self.context_length)
        return ids, params, text

    def _enqueue(self, prepared) -> tuple[LLMEngine, list[str]]:
        engine = self.engine_for(sum(p.n for _, p, _ in prepared), max(len(i) + p.max_tokens for i, p, _ in prepared))
        reqs = [engine.make_request(ids, params, request_id=f"gen-{next(self._ids)}") for ids, params, _ in prepared]
        for req, (_, _, text) in zip(reqs, prepared):
            req.prompt = text
        return engine, [engine.enqueue(r) for r in reqs]

    # ------------------------------------------------------------------------------------------ doors

    def generate(self, prompt, **sampling):
        """Complete a prompt (text or token ids), or a list of prompts (batched): a GenerationResult, or a list."""
        single = isinstance(prompt, str) or (isinstance(prompt, (list, tuple)) and prompt
                                             and isinstance(prompt[0], int))
        prompts = [prompt] if single else list(prompt)
        if not prompts:
            raise BadInput("no prompts")
        results = self._run([self._request(p, False, dict(sampling)) for p in prompts])
        return results[0] if single else results

    def chat(self, messages, **sampling) -> GenerationResult:
        """Answer a conversation ([{"role": ..., "content": ...}], or a string as one user message) with the
        model's chat template; the answer ends at the template's end-of-turn token."""
        return self._run([self._request(messages, True, dict(sampling))])[0]

    def stream(self, prompt_or_messages, **sampling) -> Iterator[str]:
        """Text deltas as they are generated (never a split character). A string is a plain prompt; a list of
        message dicts goes through the chat template. Checked before the first delta is asked for."""
        prepared = self._request(prompt_or_messages, _is_messages(prompt_or_messages), dict(sampling))
        if prepared[1].n != 1:
            raise BadInput("stream() streams one sequence: n must be 1")
        return self._deltas(prepared)

    def _deltas(self, prepared) -> Iterator[str]:
        engine, (rid,) = self._enqueue([prepared])
        for out in self._outputs(engine, [rid]):
            if out.outputs[0].delta:
                yield out.outputs[0].delta

    def _run(self, prepared) -> list[GenerationResult]:
        engine, rids = self._enqueue(prepared)
        final = {out.request_id: out for out in self._outputs(engine, rids) if out.finished}
        return [GenerationResult.from_output(final[rid]) for rid in rids]

    def _outputs(self, engine: LLMEngine, rids: list[str]) -> Iterator[RequestOutput]:
        """The outputs of requests `rids` as they come, stepping the engine when there are none yet. Outputs
        of other requests (a stream still open) are kept for their own callers. Stopping early aborts."""
        pending = set(rids)
        try:
            while pending:
                for rid in rids:
                    for out in self._outbox.pop(rid, ()):
                        if out.finished:
                            pending.discard(rid)
                        yield out
                if pending and not any(rid in self._outbox for rid in pending):
                    if not engine.has_unfinished():
                        raise RuntimeError(f"requests {sorted(pending)} vanished from the engine")
                    for out in engine.step():
                        self._outbox.setdefault(out.request_id, []).append(out)
        finally:
            for rid in pending:
                engine.abort(rid)
                self._outbox.pop(rid, None)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text))


def _is_messages(x) -> bool:
    return isinstance(x, (list, tuple)) and bool(x) and isinstance(x[0], dict)


class Embedder:
    """A sentence-embedding model: texts -> L2-normalised float32 vectors (as its sentence-transformers
    config says: pooling, normalisation, max length; longer texts are truncated to max_length tokens)."""

    task = "embeddings"

    def __init__(self, manifest, dtype=None, device=None, batch_size: int = 32):
        from ..models.loader import load_sentence_encoder

        self.manifest = manifest
        self.name = getattr(manifest, "name", str(manifest))
        self.encoder = load_sentence_encoder(manifest, dtype=dtype, device=device)
        self.model = self.encoder.model
        self.tokenizer = self.encoder.tokenizer
        self.batch_size = batch_size
        self.device = next(self.model.parameters()).device

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, dim={self.dim})"

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def tokenize(self, texts) -> list[list[int]]:
        texts = _texts(texts)
        return [e.ids for e in self.tokenizer.backend.encode_batch(texts)]

    def count_tokens(self, texts) -> list[int]:
        """Tokens of each text as embedded (after truncation)."""
        return [len(ids) for ids in self.tokenize(texts)]

    @torch.inference_mode()
    def embed(self, texts, normalize: bool | None = None) -> np.ndarray:
        """float32 [n, dim] for a list of n texts (a single string gives [1, dim])."""
        encoded = self.tokenize(texts)
        normalize = self.encoder.normalize if normalize is None else normalize
        out = np.zeros((len(encoded), self.dim), dtype=np.float32)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))   # similar lengths pad little
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            T = max(len(encoded[i]) for i in idx)
            ids = torch.zeros(len(idx), T, dtype=torch.long)
            mask = torch.zeros(len(idx), T, dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, :len(encoded[i])] = 1
            ids, mask = ids.to(self.device), mask.to(self.device)
            h = self.model(ids, mask).float()
            pooled = _pool(h, mask, self.encoder.pooling)
            if normalize:
                pooled = F.normalize(pooled, p=2, dim=-1)
            out[idx] = pooled.cpu().numpy()
        return out


def _texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise BadInput("no texts to embed")
    for t in texts:
        if not isinstance(t, str):
            raise BadInput(f"embed takes strings, got {type(t).__name__}")
    return texts


def _pool(h: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    m = mask[..., None].to(h.dtype)
    if mode == "cls":
        return h[:, 0]
    if mode == "max":
        return h.masked_fill(m == 0, float("-inf")).amax(1)
    total = (h * m).sum(1)
    n = m.sum(1).clamp(min=1e-9)
    return total / (n.sqrt() if mode == "mean_sqrt_len" else n)
