"""What a request carries through the engine: its sequences' tokens, text, logprobs and finish state.

A `Request` (one prompt, one SamplingParams) owns `params.n` `Sequence`s that share its prompt. Sequences
are what the scheduler places in cache slots and the runner computes; everything that changes as tokens
arrive lives here, and the engine turns it into `RequestOutput`s.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from .detok import IncrementalDecoder
from .sampling import SamplingParams
from .stops import StopChecker


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of one token, and the `top` most likely alternatives at its position."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()   # (token id, logprob), most likely first


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class CompletionOutput:
    """One of a request's n sequences, as of the step that produced it."""

    index: int
    text: str                                 # everything shown so far (with echo, the prompt first)
    delta: str                                # the text added by this step
    token_ids: list[int]                      # generated tokens (the stop token included)
    logprobs: list[TokenLogprob | None] | None = None  # with echo, the prompt tokens' first (the first None)
    delta_logprobs: list[TokenLogprob | None] | None = None
    finish_reason: str | None = None          # "stop" | "length" | None while running
    stop_reason: str | int | None = None      # the stop string or stop token id that ended it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    usage: Usage
    prompt_logprobs: list[TokenLogprob | None] | None = None   # echo with logprobs: [None, lp(t1 | t0), ...]


class Sequence:
    """One generated continuation of a prompt: its cache slot, tokens, incremental text and stop state."""

    def __init__(self, request: "Request", index: int, tokenizer, eos_ids: frozenset[int],
                 generator: torch.Generator | None, constraint=None):
        p = request.params
        self.request = request
        self.index = index
        self.params = p
        self.generator = generator
        self.prompt_len = len(request.prompt_ids)
        self.output_ids: list[int] = []
        self.slot: int | None = None
        self.status = Status.WAITING
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        self.stop_ids = frozenset(p.stop_token_ids) | (frozenset() if p.ignore_eos else eos_ids)
        self.decoder = IncrementalDecoder(tokenizer, request.prompt_ids) if tokenizer is not None else None
        self.stops = StopChecker(p.stop)
        self.text = ""
        self.delta = ""
        self.logprobs: list[TokenLogprob | None] | None = None if p.logprobs is None else []
        self.n_delta_logprobs = 0
        self.constraint = constraint   # constraints.GrammarConstraint or None: what the sampler may pick

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def num_tokens(self) -> int:
        return self.prompt_len + len(self.output_ids)

    @property
    def last_token(self) -> int:
        return self.output_ids[-1] if self.output_ids else self.request.prompt_ids[-1]

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    def start_text(self, prompt_text: str, prompt_logprobs) -> None:
        """With echo: the prompt (and its logprobs) come first in what this sequence shows."""
        self.text = self.delta = prompt_text
        if self.logprobs is not None and prompt_logprobs is not None:
            self.logprobs.extend(prompt_logprobs)

    def append(self, token: int, logprob: TokenLogprob | None) -> None:
        """Take one generated token: stop tokens, text, stop strings and the token budget decide the end."""
        self.output_ids.append(token)
        if self.logprobs is not None:
            self.logprobs.append(logprob)
        if token in self.stop_ids:
            self._finish("stop", token)
        elif self.decoder is not None:
            self._show(self.decoder.push(token))
        if self.constraint is not None and not self.finished:
            if not self.constraint.allows(token):   # no token of the vocabulary kept the output valid (the
                self._finish("stop", None)           # sampler's last resort)
            else:
                self.constraint.advance(token)
                if self.constraint.done:             # the structure is complete (a closed JSON object)
                    self._finish("stop", None)
        if not self.finished and len(self.output_ids) >= self.params.max_tokens:
            self._finish("length", None)

    def _show(self, piece: str) -> None:
        if not piece:
            return
        if not self.stops.stops:
            self.text += piece
            self.delta += piece
            return
        safe, stopped = self.stops.feed(piece)
        self.text += safe
        self.delta += safe
        if stopped:
            self._finish("stop", self.stops.matched)

    def _finish(self, reason: str, stop_reason) -> None:
        if not isinstance(stop_reason, str):
            # not a stop string: show the tail the decoder held back (text ending in U+FFFD, less the bytes of
            # an incomplete last character, which are dropped: its tokens stay in output_ids and the usage) and
            # the one the stop checker held back (a possible start of a stop string)
            if self.decoder is not None:
                self._show(self.decoder.flush())
                if self.finished:   # that tail completed a stop string
                    return
            tail = self.stops.flush()
            self.text += tail
            self.delta += tail
        self.status = Status.FINISHED
        self.finish_reason = reason
        self.stop_reason = stop_reason

    def take_output(self) -> CompletionOutput:
        """The state for a RequestOutput; the delta (text and logprobs) is handed out once."""
        delta, self.delta = self.delta, ""
        out = CompletionOutput(self.index, self.text, delta, list(self.output_ids),
                               finish_reason=self.finish_reason, stop_reason=self.stop_reason)
        if self.logprobs is not None:
            out.logprobs = list(self.logprobs)
            out.delta_logprobs = self.logprobs[self.n_delta_logprobs:]
            self.n_delta_logprobs = len(self.logprobs)
        return out


@dataclass
class Request:
    request_id: str
    prompt: str | None               # the text, when the prompt came as text
    prompt_ids: list[int]
    params: SamplingParams
    seqs: list[Sequence] = field(default_factory=list)
    adapter: int = 0                 # the slot of its LoRA adapter in the engine's AdapterSet (0: the base)
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.seqs)

    def output(self) -> RequestOutput:
        outs = [s.take_output() for s in self.seqs]
        usage = Usage(len(self.prompt_ids), sum(len(s.output_ids) for s in self.seqs))
        return RequestOutput(self.request_id, self.prompt, self.prompt_ids, outs, self.finished, usage,
                             self.prompt_logprobs)
