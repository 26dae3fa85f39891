"""The generation engine: requests in, tokens and text out, many sequences sharing one model.

    engine = LLMEngine(model, tokenizer, max_batch=8)
    rid = engine.add_request("Once upon a time", SamplingParams(max_tokens=32, temperature=0))
    while engine.has_unfinished():
        for out in engine.step():          # one prefill or one decode of every running sequence
            print(out.outputs[0].delta, end="")

`step()` is what a server's event loop calls; `generate()` and `stream()` are synchronous loops over it.
Continuous batching: a request added between steps joins at the next token boundary, and a finished
sequence frees its cache slot at once (scheduler.py). Each step's forward pass runs in runner.py;
sequence.py turns the sampled tokens into text, stops and finish reasons.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from ..errors import BadInput
from .json_mode import JsonConstraint
from .runner import ModelRunner
from .sampling import SamplingParams, make_generator
from .scheduler import Scheduler
from .sequence import Request, RequestOutput, Sequence, Status, TokenLogprob

DEFAULT_PREFILL_TOKENS = 4096


class LLMEngine:
    """A decoder model (the models/ cache contract) with `max_batch` cache slots of `context_length` tokens.

    tokenizer: anything with encode(text) -> ids and decode(ids, skip_special_tokens=...) -> str (our
    text.tokenizer.Tokenizer); None for token-id prompts only, without text. eos_ids: the tokens that end a
    sequence unless `ignore_eos` (default: the tokenizer's eos_id)."""

    def __init__(self, model, tokenizer=None, *, max_batch: int = 8, context_length: int | None = None,
                 eos_ids: Iterable[int] | None = None, max_prefill_tokens: int = DEFAULT_PREFILL_TOKENS):
        limit = model.config.max_seq_len
        context_length = limit if context_length is None else int(context_length)
        if not 1 <= context_length <= limit:
            raise BadInput(f"context_length {context_length} is outside the model's 1..{limit} tokens")
        if max_batch < 1:
            raise BadInput(f"max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_batch = max_batch
        if eos_ids is None:
            eos = getattr(tokenizer, "eos_id", None)
            eos_ids = () if eos is None else (eos,)
        self.eos_ids = frozenset(int(t) for t in eos_ids)
        self.runner = ModelRunner(model, max_batch, context_length)
        self.scheduler = Scheduler(max_batch, max_prefill_tokens)
        self.requests: dict[str, Request] = {}
        self._ids = itertools.count()

    @property
    def vocab_size(self) -> int:
        return self.runner.vocab_size

    # ------------------------------------------------------------------------------------------ requests

    def make_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                     request_id: str | None = None, add_special_tokens: bool = True) -> Request:
        """Tokenise and check a request without queueing it (BadInput says what is wrong)."""
        params = params or SamplingParams()
        text = prompt if isinstance(prompt, str) else None
        if text is not None:
            if self.tokenizer is None:
                raise BadInput("this engine has no tokenizer: give the prompt as token ids")
            ids = list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))
        else:
            ids = [int(t) for t in prompt]
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise BadInput(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab_size - 1}]")
        if not ids:
            raise BadInput("the prompt is empty (no tokens)")
        if params.stop and self.tokenizer is None:
            raise BadInput("stop strings need a tokenizer; use stop_token_ids")
        if params.json_mode and not hasattr(self.tokenizer, "token_bytes"):
            raise BadInput("JSON mode needs the model's tokenizer (puhui's Tokenizer: it reads every token's bytes)")
        params.check_vocab(self.vocab_size)
        check_context(len(ids), params.max_tokens, self.context_length)
        if request_id is None:
            request_id = f"req-{next(self._ids)}"
        elif request_id in self.requests:
            raise BadInput(f"request id {request_id!r} is already running")
        req = Request(request_id, text, ids, params)
        device = self.runner.device
        req.seqs = [Sequence(req, i, self.tokenizer, self.eos_ids, make_generator(params.seed, i, device),
                             JsonConstraint(self.tokenizer.token_bytes()) if params.json_mode else None)
                    for i in range(params.n)]
        return req

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, add_special_tokens: bool = True) -> str:
        """Queue a prompt (text, or token ids as they are); return its request id. It starts at the next step."""
        return self.enqueue(self.make_request(prompt, params, request_id, add_special_tokens))

    def enqueue(self, req: Request) -> str:
        if req.request_id in self.requests:
            raise BadInput(f"request id {req.request_id!r} is already running")
        self.requests[req.request_id] = req
        for seq in req.seqs:
            self.scheduler.add(seq)
        return req.request_id

    def abort(self, request_id: str) -> bool:
        """Drop a request, waiting or running, and free its slots. False when it is unknown or finished."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return False
        self.scheduler.abort(request_id)
        for seq in req.seqs:
            if seq.finish_reason is None:
                seq.finish_reason = "abort"
        return True

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # ------------------------------------------------------------------------------------------ the step

    def step(self) -> list[RequestOutput]:
        """Prefill newly admitted sequences, or decode one token for every running one. Returns an output
        for each request that moved (its sequences' deltas since the last output); finished ones are dropped."""
        seqs, is_prefill = self.scheduler.schedule()
        if not seqs:
            return []
        if is_prefill:
            echo_rows = [i for i, s in enumerate(seqs) if s.params.echo and s.params.logprobs is not None
                         and s.request.prompt_logprobs is None and s.index == 0]
            logits, echoed = self.runner.prefill(seqs, echo_rows)
            for i, lp in echoed.items():
                req = seqs[i].request
                req.prompt_logprobs = [None] + (_logprob_list(req.prompt_ids[1:], *lp) if lp is not None else [])
            for s in seqs:
                if s.params.echo:
                    s.start_text(self._prompt_text(s.request), s.request.prompt_logprobs)
        else:
            logits = self.runner.decode(seqs)
        sampled = self.runner.sample(seqs, logits)
        tokens = sampled.tokens.tolist()
        lps = _logprob_list(tokens, sampled.logprobs, sampled.top_ids, sampled.top_logprobs) \
            if sampled.logprobs is not None else None
        touched: dict[str, Request] = {}
        for i, (seq, token) in enumerate(zip(seqs, tokens)):
            lp = None
            if lps is not None and seq.params.logprobs is not None:
                lp = lps[i]
                if len(lp.top) > seq.params.logprobs:
                    lp = TokenLogprob(lp.token_id, lp.logprob, lp.top[:seq.params.logprobs])
            seq.append(token, lp)
            if seq.finished:
                self.scheduler.finish(seq)
            touched[seq.request_id] = seq.request
        outputs = []
        for rid, req in touched.items():
            out = req.output()
            outputs.append(out)
            if out.finished:
                self.requests.pop(rid, None)
        return outputs

    def _prompt_text(self, req: Request) -> str:
        if req.prompt is not None:
            return req.prompt
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(req.prompt_ids, skip_special_tokens=False)

    # ------------------------------------------------------------------------------------------ loops

    def generate(self, prompts, params: SamplingParams | list[SamplingParams] | None = None) -> list[RequestOutput]:
        """Run prompts to the end, batched; outputs in the order of the prompts. A prompt is a string or a
        list of token ids; `prompts` is one prompt or a list of them. All are checked before any runs.
        This drives the engine itself: for a single caller, not alongside a loop that calls step()."""
        if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts
                                        and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        if not isinstance(params, (list, tuple)):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise BadInput(f"{len(prompts)} prompts but {len(params)} sampling params")
        reqs = [self.make_request(p, sp) for p, sp in zip(prompts, params)]
        final: dict[str, RequestOutput] = {}
        try:
            for r in reqs:
                self.enqueue(r)
            while any(r.request_id not in final for r in reqs):
                for out in self.step():
                    if out.finished:
                        final[out.request_id] = out
        finally:
            for r in reqs:
                if r.request_id not in final:
                    self.abort(r.request_id)
        return [final[r.request_id] for r in reqs]

    def stream(self, prompt, params: SamplingParams | None = None,
               add_special_tokens: bool = True) -> Iterator[RequestOutput]:
        """One request's outputs as they come, step by step (drives the engine: for a single caller).
        Closing the iterator early aborts the request."""
        rid = self.add_request(prompt, params, add_special_tokens=add_special_tokens)
        done = False
        try:
            while not done:
                for out in self.step():
                    if out.request_id == rid:
                        done = out.finished
                        yield out
        finally:
            if not done:
                self.abort(rid)


def check_context(prompt_tokens: int, max_tokens: int, limit: int) -> None:
    """BadInput, naming the numbers, unless the prompt and max_tokens fit a context window of `limit` tokens."""
    if prompt_tokens >= limit:
        raise BadInput(f"the prompt has {prompt_tokens} tokens, but the context window is {limit} tokens "
                       f"(room is needed for at least one generated token)")
    if prompt_tokens + max_tokens > limit:
        raise BadInput(f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                       f"{prompt_tokens + max_tokens} in all, beyond the context window of {limit} tokens "
                       f"(lower max_tokens to at most {limit - prompt_tokens})")


def _logprob_list(token_ids: list[int], chosen, top_ids, top_lps) -> list[TokenLogprob]:
    """Token ids and tensors [N], [N, k], [N, k] -> N TokenLogprob."""
    chosen, top_ids, top_lps = chosen.tolist(), top_ids.tolist(), top_lps.tolist()
    return [TokenLogprob(t, c, tuple(zip(i, p))) for t, c, i, p in zip(token_ids, chosen, top_ids, top_lps)]


__all__ = ["LLMEngine", "RequestOutput", "SamplingParams", "Status", "check_context"]
