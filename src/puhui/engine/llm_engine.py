"""The generation engine: requests in, tokens and text out, many sequences sharing one model.

    engine = LLMEngine(model, tokenizer, max_batch=8)
    rid = engine.add_request("Once upon a time", SamplingParams(max_tokens=32, temperature=0))
    while engine.has_unfinished():
        for out in engine.step():          # one prefill or one decode of every running sequence
            print(out.outputs[0].delta, end="")

`step()` is what a server's worker calls (serve/worker.py: the one thread that steps a served engine).
`outputs(request_ids)` is the one loop in the library: it steps until the given requests finish, and keeps
the outputs of other requests (a stream still open) for their own callers; `generate()`, `stream()` and the
task objects (tasks/text.py) all go through it. Continuous batching: a request added between steps joins at
the next token boundary, and a finished sequence frees its cache slot at once (scheduler.py). Each step's
forward pass runs in runner.py; sequence.py turns the sampled tokens into text, stops and finish reasons.

The KV cache is allocated for `slots` sequences of `positions` tokens (default: all of max_batch and
context_length at once) and grows in place, up to those limits, when a request or `reserve()` needs more:
what running sequences hold is kept.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..errors import BadInput, TooLong
from .constraints import Grammars
from .runner import ModelRunner
from .sampling import SamplingParams, make_generator
from .scheduler import Scheduler
from .sequence import Request, RequestOutput, Sequence, Status, TokenLogprob

DEFAULT_PREFILL_TOKENS = 4096
CACHE_STEP = 1024   # a growing cache grows by whole steps of this many positions


@dataclass(frozen=True)
class EngineStats:
    """The engine's load, for a server's gauges and admission."""

    running: int          # sequences with a cache slot
    waiting: int          # sequences queued for one
    slots: int            # cache slots allocated now (at most max_batch)
    positions: int        # positions a slot holds now (at most context_length)
    max_batch: int
    context_length: int


class LLMEngine:
    """A decoder model (the models/ cache contract) with up to `max_batch` sequences of up to `context_length`
    tokens at once; the cache starts at `slots` x `positions` (default: all of it) and grows when needed.

    tokenizer: anything with encode(text) -> ids and decode(ids, skip_special_tokens=...) -> str (our
    text.tokenizer.Tokenizer); None for token-id prompts only, without text. eos_ids: the tokens that end a
    sequence unless `ignore_eos` (default: the tokenizer's eos_id). One engine a model: the cache lives on the
    model's attention modules."""

    def __init__(self, model, tokenizer=None, *, max_batch: int = 8, context_length: int | None = None,
                 eos_ids: Iterable[int] | None = None, max_prefill_tokens: int = DEFAULT_PREFILL_TOKENS,
                 slots: int | None = None, positions: int | None = None):
        limit = model.config.max_seq_len
        context_length = limit if context_length is None else int(context_length)
        if not 1 <= context_length <= limit:
            raise BadInput(f"context_length {context_length} is outside the model's 1..{limit} tokens",
                           param="context_length")
        if max_batch < 1:
            raise BadInput(f"max_batch must be >= 1, got {max_batch}", param="max_batch")
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.max_batch = max_batch
        if eos_ids is None:
            eos = getattr(tokenizer, "eos_id", None)
            eos_ids = () if eos is None else (eos,)
        self.eos_ids = frozenset(int(t) for t in eos_ids)
        slots = max_batch if slots is None else min(max(1, slots), max_batch)
        positions = context_length if positions is None else min(max(1, positions), context_length)
        self.runner = ModelRunner(model, slots, positions)
        self.scheduler = Scheduler(slots, max_prefill_tokens)
        self.requests: dict[str, Request] = {}
        self._outbox: dict[str, list[RequestOutput]] = {}   # outputs stepped out while their caller waited elsewhere
        self._grammars: Grammars | None = None
        self._adapters = None            # engine.adapters.AdapterSet, made when the first adapter is added
        self._ids = itertools.count()

    @property
    def slots(self) -> int:
        """Cache slots allocated now."""
        return self.runner.n_slots

    @property
    def positions(self) -> int:
        """Positions each slot holds now."""
        return self.runner.max_seq_len

    def reserve(self, n_seqs: int, n_tokens: int) -> None:
        """Grow the cache, in place, to hold n_seqs sequences (at most max_batch) of n_tokens positions (at most
        context_length; rounded up to whole CACHE_STEPs). Never shrinks; running sequences keep their keys."""
        slots = min(self.max_batch, max(1, n_seqs, self.slots))
        positions = max(self.positions, min(self.context_length, -(-max(1, n_tokens) // CACHE_STEP) * CACHE_STEP))
        if (slots, positions) != (self.slots, self.positions):
            self.runner.grow(slots, positions)
            self.scheduler.add_slots(slots)

    def stats(self) -> EngineStats:
        sched = self.scheduler
        return EngineStats(len(sched.running), len(sched.waiting), self.slots, self.positions, self.max_batch,
                           self.context_length)

    @property
    def vocab_size(self) -> int:
        return self.runner.vocab_size

    # ------------------------------------------------------------------------------------------ requests

    def make_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                     request_id: str | None = None, add_special_tokens: bool = True,
                     adapter: str | None = None) -> Request:
        """Tokenise and check a request without queueing it (BadInput says what is wrong). `adapter`: the name
        of a LoRA adapter added to this engine (add_adapter) that its rows run with; None: the base."""
        slot = 0
        if adapter is not None:
            slot = (self._adapters.slots if self._adapters is not None else {}).get(adapter, 0)
            if not slot:
                raise BadInput(f"adapter {adapter!r} is not loaded on this model", param="model")
        params = params or SamplingParams()
        text = prompt if isinstance(prompt, str) else None
        if text is not None:
            if self.tokenizer is None:
                raise BadInput("this engine has no tokenizer: give the prompt as token ids", param="prompt")
            ids = list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens))
        else:
            ids = [int(t) for t in prompt]
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise BadInput(f"prompt token id {bad[0]} is outside the vocabulary [0, {self.vocab_size - 1}]",
                               param="prompt")
        if not ids:
            raise BadInput("the prompt is empty (no tokens)", param="prompt")
        if params.stop and self.tokenizer is None:
            raise BadInput("stop strings need a tokenizer; use stop_token_ids", param="stop")
        if params.structure is not None and not hasattr(self.tokenizer, "token_bytes"):
            raise BadInput("JSON mode and structured outputs need the model's tokenizer (puhui's Tokenizer: it "
                           "reads every token's bytes)", param=params.structure.param)
        params.check_vocab(self.vocab_size)
        check_context(len(ids), params.max_tokens, self.context_length)
        if request_id is None:
            request_id = f"req-{next(self._ids)}"
        elif request_id in self.requests:
            raise BadInput(f"request id {request_id!r} is already running", param="request_id")
        req = Request(request_id, text, ids, params, adapter=slot)
        device = self.runner.device
        grammars = self.grammars() if params.structure is not None else None
        req.seqs = [Sequence(req, i, self.tokenizer, self.eos_ids, make_generator(params.seed, i, device),
                             grammars.constraint(params.structure) if grammars is not None else None)
                    for i in range(params.n)]
        return req

    def grammars(self) -> Grammars:
        """The structures compiled for this engine's vocabulary (made on the first structured request)."""
        if self._grammars is None:
            self._grammars = Grammars.of(self.tokenizer, self.eos_ids)
        return self._grammars

    def add_adapter(self, adapter) -> None:
        """Serve a LoRA adapter (engine.adapters.Adapter) beside the base, in the same batches (replacing one of
        the same name once no request runs with it)."""
        from .adapters import AdapterSet

        if self._adapters is None:
            self._adapters = AdapterSet(self.model)
            self.runner.adapters = self._adapters
        if adapter.name in self._adapters.slots:
            self._check_unused(adapter.name)
        self._adapters.add(adapter)

    def remove_adapter(self, name: str) -> None:
        """Stop serving an adapter (BadInput while requests still run with it, or when it is not loaded)."""
        if self._adapters is None or name not in self._adapters.slots:
            raise BadInput(f"adapter {name!r} is not loaded on this model", param="lora_name")
        self._check_unused(name)
        self._adapters.remove(name)

    def adapter_names(self) -> list[str]:
        return sorted(self._adapters.slots) if self._adapters is not None else []

    def _check_unused(self, name: str) -> None:
        slot = self._adapters.slots[name]
        busy = sum(1 for r in self.requests.values() if r.adapter == slot)
        if busy:
            raise BadInput(f"adapter {name!r} is in use by {busy} running request(s); try again when they end",
                           param="lora_name")

    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, add_special_tokens: bool = True) -> str:
        """Queue a prompt (text, or token ids as they are); return its request id. It starts at the next step."""
        return self.enqueue(self.make_request(prompt, params, request_id, add_special_tokens))

    def enqueue(self, req: Request) -> str:
        """Queue a request made by make_request (the cache grows to its prompt and max_tokens if it must)."""
        if req.request_id in self.requests:
            raise BadInput(f"request id {req.request_id!r} is already running")
        self.reserve(1, len(req.prompt_ids) + req.params.max_tokens)
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

    def abort_all(self) -> list[str]:
        """Drop every request, waiting or running; return their ids."""
        rids = list(self.requests)
        for rid in rids:
            self.abort(rid)
        for seq in list(self.scheduler.waiting) + list(self.scheduler.running):   # none should be left
            self.scheduler.abort(seq.request_id)
        self._outbox.clear()
        return rids

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

    def outputs(self, request_ids: list[str]) -> Iterator[RequestOutput]:
        """The outputs of the requests `request_ids` (enqueued already) as they come, stepping the engine when
        there are none yet: the one step loop of the library. Outputs of other requests that a step makes are
        kept for their own callers (a stream still open in the same thread). Closing the iterator early aborts
        the requests not yet finished."""
        pending = set(request_ids)
        try:
            while pending:
                for rid in request_ids:
                    for out in self._outbox.pop(rid, ()):
                        if out.finished:
                            pending.discard(rid)
                        yield out
                if pending and not any(rid in self._outbox for rid in pending):
                    if not self.has_unfinished():
                        raise RuntimeError(f"requests {sorted(pending)} vanished from the engine")
                    for out in self.step():
                        self._outbox.setdefault(out.request_id, []).append(out)
        finally:
            for rid in pending:
                self.abort(rid)
                self._outbox.pop(rid, None)

    def generate(self, prompts, params: SamplingParams | list[SamplingParams] | None = None) -> list[RequestOutput]:
        """Run prompts to the end, batched; outputs in the order of the prompts. A prompt is a string or a
        list of token ids; `prompts` is one prompt or a list of them. All are checked before any runs.
        This steps the engine in the caller's thread: not alongside a server's worker."""
        if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts
                                        and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        if not isinstance(params, (list, tuple)):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise BadInput(f"{len(prompts)} prompts but {len(params)} sampling params", param="params")
        reqs = [self.make_request(p, sp) for p, sp in zip(prompts, params)]
        self.reserve(sum(r.params.n for r in reqs), max(len(r.prompt_ids) + r.params.max_tokens for r in reqs))
        rids = []
        try:
            for r in reqs:
                rids.append(self.enqueue(r))
        except BaseException:
            for rid in rids:
                self.abort(rid)
            raise
        final = {out.request_id: out for out in self.outputs(rids) if out.finished}
        return [final[rid] for rid in rids]

    def stream(self, prompt, params: SamplingParams | None = None,
               add_special_tokens: bool = True) -> Iterator[RequestOutput]:
        """One request's outputs as they come, step by step (in the caller's thread). Closing the iterator early
        aborts the request."""
        rid = self.add_request(prompt, params, add_special_tokens=add_special_tokens)
        yield from self.outputs([rid])


def check_context(prompt_tokens: int, max_tokens: int, limit: int) -> None:
    """TooLong (code context_length_exceeded), naming the numbers and the parameter to change, unless the
    prompt and max_tokens fit a context window of `limit` tokens."""
    if prompt_tokens >= limit:
        raise TooLong(f"the prompt has {prompt_tokens} tokens, but the context window is {limit} tokens "
                      f"(room is needed for at least one generated token)", param="prompt")
    if prompt_tokens + max_tokens > limit:
        raise TooLong(f"the prompt has {prompt_tokens} tokens and max_tokens is {max_tokens}: "
                      f"{prompt_tokens + max_tokens} in all, beyond the context window of {limit} tokens "
                      f"(lower max_tokens to at most {limit - prompt_tokens})", param="max_tokens")


def _logprob_list(token_ids: list[int], chosen, top_ids, top_lps) -> list[TokenLogprob]:
    """Token ids and tensors [N], [N, k], [N, k] -> N TokenLogprob."""
    chosen, top_ids, top_lps = chosen.tolist(), top_ids.tolist(), top_lps.tolist()
    return [TokenLogprob(t, c, tuple(zip(i, p))) for t, c, i, p in zip(token_ids, chosen, top_ids, top_lps)]


__all__ = ["CACHE_STEP", "EngineStats", "LLMEngine", "RequestOutput", "SamplingParams", "Status", "check_context"]
