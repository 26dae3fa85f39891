"""From a batch of next-token logits to next tokens.

`sample` works on logits [B, V] and one `SamplingParams` per row, in this order (HF's and vLLM's):

  1. repetition_penalty  HF/CTRL: over the tokens seen in prompt + output, a positive logit is divided
                         by the penalty, a negative one multiplied by it.
  2. frequency/presence  OpenAI: over the generated tokens only,
                         logit -= frequency_penalty * count + presence_penalty * (count > 0).
  3. logit_bias          added as given; -100 bans a token, +100 all but forces it.
     -> logprobs are read here: log_softmax of the logits after 1-3 and before 4-5, i.e. the model's own
        distribution after penalties and bias, not the tempered or truncated one the token is drawn from.
  4. temperature         0 (anything below 1e-5, as vLLM) is greedy: the argmax of the logits after 1-3.
  5. top_k, top_p, min_p truncation of the tempered distribution (see `truncate`).
  6. draw                exponential race, argmax(p / q) with q ~ Exp(1) drawn from the row's own
                         torch.Generator, so a seeded request gets the same tokens whatever shares its batch.
  7. constraint          a row with a constraint (JSON mode, a schema, a grammar: constraints.py) takes its
                         best-scored allowed token
                         instead: the largest logit (greedy) or p / q (a draw restricted to the allowed
                         tokens); when the truncated set has none, the most likely allowed token.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..errors import BadInput
from .constraints import JSON_OBJECT, Structure

GREEDY_BELOW = 1e-5   # a temperature below this is greedy (dividing by it would overflow)
MAX_LOGPROBS = 20     # OpenAI's limit on top alternatives


def _check_int(name: str, value, ok, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not ok(value):
        raise BadInput(f"{name} must be {allowed}, got {value!r}", param=name)
    return int(value)


def _check_real(name: str, value, ok, allowed: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or not ok(value)):
        raise BadInput(f"{name} must be {allowed}, got {value!r}", param=name)
    return float(value)


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request. Neutral values switch a setting off."""

    max_tokens: int = 256
    temperature: float = 1.0           # 0 = greedy
    top_k: int = 0                     # 0 = off
    top_p: float = 1.0                 # 1 = off
    min_p: float = 0.0                 # 0 = off
    repetition_penalty: float = 1.0    # 1 = off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: tuple[str, ...] = ()         # a str or any sequence of str is accepted
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    n: int = 1
    json_mode: bool = False            # the output is one JSON object (constrained decoding, constraints.py)
    structure: Structure | None = None  # what the output must be: a JSON schema, a regex, a grammar (constraints.py)
    logprobs: int | None = None        # None = no logprobs; k = the chosen token's and k alternatives
    echo: bool = False
    ignore_eos: bool = False

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        put("max_tokens", _check_int("max_tokens", self.max_tokens, lambda v: v >= 1, "an integer >= 1"))
        put("temperature", _check_real("temperature", self.temperature, lambda v: v >= 0,
                                       "a number >= 0 (0 means greedy)"))
        put("top_k", _check_int("top_k", self.top_k, lambda v: v >= 0, "an integer >= 0 (0 means off)"))
        put("top_p", _check_real("top_p", self.top_p, lambda v: 0 < v <= 1, "a number in (0, 1]"))
        put("min_p", _check_real("min_p", self.min_p, lambda v: 0 <= v <= 1, "a number in [0, 1]"))
        put("repetition_penalty", _check_real("repetition_penalty", self.repetition_penalty,
                                              lambda v: v > 0, "a number > 0 (1 means off)"))
        for name in ("presence_penalty", "frequency_penalty"):
            put(name, _check_real(name, getattr(self, name), lambda v: -2 <= v <= 2, "a number in [-2, 2]"))
        put("logit_bias", self._checked_logit_bias())
        stop = self.stop
        stop = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
        for s in stop:
            if not isinstance(s, str) or not s:
                raise BadInput(f"stop must be a non-empty string or a list of them, got {s!r}", param="stop")
        put("stop", stop)
        ids = tuple(self.stop_token_ids or ())
        put("stop_token_ids", tuple(_check_int("stop_token_ids", t, lambda v: v >= 0,
                                               "a list of integers >= 0") for t in ids))
        if self.seed is not None:
            put("seed", _check_int("seed", self.seed, lambda v: True, "an integer or null"))
        put("n", _check_int("n", self.n, lambda v: v >= 1, "an integer >= 1"))
        if self.logprobs is not None:
            put("logprobs", _check_int("logprobs", self.logprobs, lambda v: 0 <= v <= MAX_LOGPROBS,
                                       f"an integer in [0, {MAX_LOGPROBS}] or null"))
        for name in ("echo", "ignore_eos", "json_mode"):
            if not isinstance(getattr(self, name), bool):
                raise BadInput(f"{name} must be true or false, got {getattr(self, name)!r}", param=name)
        if self.structure is not None and not isinstance(self.structure, Structure):
            raise BadInput(f"structure must be a constraints.Structure, got {self.structure!r}", param="structure")
        if self.json_mode:
            if self.structure is not None and self.structure != JSON_OBJECT:
                raise BadInput(f"json_mode and a {self.structure.kind} structure: ask for one", param="json_mode")
            put("structure", JSON_OBJECT)

    def _checked_logit_bias(self) -> dict[int, float]:
        bias = self.logit_bias or {}
        if not isinstance(bias, Mapping):
            raise BadInput(f"logit_bias must be a map of token id to a number in [-100, 100], got {bias!r}",
                           param="logit_bias")
        out = {}
        for key, value in bias.items():
            token = int(key) if isinstance(key, str) and key.strip().isdigit() else key   # JSON keys are str
            token = _check_int("logit_bias", token, lambda v: v >= 0, "keyed by token ids (integers >= 0)")
            out[token] = _check_real("logit_bias", value, lambda v: -100 <= v <= 100,
                                     "a map of token id to a number in [-100, 100]")
        return out

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0

    def check_vocab(self, vocab_size: int) -> None:
        """Token ids in logit_bias and stop_token_ids must exist in the model's vocabulary."""
        for name, ids in (("logit_bias", self.logit_bias), ("stop_token_ids", self.stop_token_ids)):
            bad = [t for t in ids if t >= vocab_size]
            if bad:
                raise BadInput(f"{name} has token id {bad[0]}, outside the vocabulary [0, {vocab_size - 1}]",
                               param=name)


def make_generator(seed: int | None, index: int = 0, device="cpu") -> torch.Generator | None:
    """The generator of choice `index` of a request; None (the global RNG) when it has no seed."""
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed((seed + index) % 2**64)


class TokenCounts:
    """Per-slot token bookkeeping for the penalties, dense so that a batch's rows are one index away:
    `output[slot, t]` counts how often token t was generated, `prompt[slot, t]` says t is in the prompt.
    Costs 5 bytes per slot and vocabulary entry; make one only when some request uses penalties."""

    def __init__(self, num_slots: int, vocab_size: int, device="cpu"):
        self.output = torch.zeros(num_slots, vocab_size, dtype=torch.int32, device=device)
        self.prompt = torch.zeros(num_slots, vocab_size, dtype=torch.bool, device=device)

    def grow(self, num_slots: int) -> None:
        """Rows for at least num_slots slots; what the existing rows count is kept."""
        extra = num_slots - self.output.shape[0]
        if extra > 0:
            self.output = torch.cat([self.output, self.output.new_zeros(extra, self.output.shape[1])])
            self.prompt = torch.cat([self.prompt, self.prompt.new_zeros(extra, self.prompt.shape[1])])

    def start(self, slot: int, prompt_ids) -> None:
        """Forget what the slot held and record a new sequence's prompt."""
        self.output[slot].zero_()
        self.prompt[slot].zero_()
        ids = torch.as_tensor(list(prompt_ids), dtype=torch.long, device=self.prompt.device)
        self.prompt[slot, ids] = True

    def add(self, slots, tokens) -> None:
        """Count one generated token per slot (both [B])."""
        device = self.output.device
        slots = torch.as_tensor(slots, dtype=torch.long, device=device)
        tokens = torch.as_tensor(tokens, dtype=torch.long, device=device)
        self.output.index_put_((slots, tokens), torch.ones_like(tokens, dtype=torch.int32), accumulate=True)

    def rows(self, slots) -> tuple[torch.Tensor, torch.Tensor]:
        """(output_counts, prompt_mask) for `sample`, rows in the order of `slots`."""
        slots = torch.as_tensor(slots, dtype=torch.long, device=self.output.device)
        return self.output[slots], self.prompt[slots]


@dataclass
class Sampled:
    """What `sample` returns. The logprob fields are None unless some row asked for logprobs."""

    tokens: torch.Tensor                        # [B] int64
    logprobs: torch.Tensor | None = None        # [B] float32: log-probability of the chosen token
    top_ids: torch.Tensor | None = None         # [B, K] int64, K = the largest `logprobs` in the batch;
    top_logprobs: torch.Tensor | None = None    # [B, K] float32   row i uses its first params[i].logprobs


def apply_penalties(logits: torch.Tensor, params: list[SamplingParams], output_counts=None, prompt_mask=None):
    """Repetition, frequency and presence penalties, in place on the rows that use them."""
    rows = [i for i, p in enumerate(params) if p.uses_penalties]
    if not rows:
        return logits
    if output_counts is None or (prompt_mask is None and any(params[i].repetition_penalty != 1 for i in rows)):
        raise ValueError("penalties need output_counts, and repetition_penalty prompt_mask too (see TokenCounts)")
    device = logits.device
    idx = torch.tensor(rows, device=device)

    def column(name):
        return torch.tensor([getattr(params[i], name) for i in rows], dtype=logits.dtype, device=device)[:, None]

    x = logits[idx]
    counts = output_counts[idx].to(device=device, dtype=logits.dtype)
    generated = counts > 0
    seen = generated if prompt_mask is None else generated | prompt_mask[idx].to(device)
    rep = column("repetition_penalty")
    x = torch.where(seen, torch.where(x > 0, x / rep, x * rep), x)
    x = x - column("frequency_penalty") * counts - column("presence_penalty") * generated
    logits[idx] = x
    return logits


def apply_logit_bias(logits: torch.Tensor, params: list[SamplingParams]):
    """Add each row's logit_bias, in place."""
    rows, cols, vals = [], [], []
    for i, p in enumerate(params):
        for token, bias in p.logit_bias.items():
            rows.append(i)
            cols.append(token)
            vals.append(bias)
    if not rows:
        return logits
    if max(cols) >= logits.shape[-1]:
        raise BadInput(f"logit_bias has token id {max(cols)}, outside the vocabulary [0, {logits.shape[-1] - 1}]",
                       param="logit_bias")
    device = logits.device
    logits.index_put_((torch.tensor(rows, device=device), torch.tensor(cols, device=device)),
                      torch.tensor(vals, dtype=logits.dtype, device=device), accumulate=True)
    return logits


def truncate(logits: torch.Tensor, top_k: list[int], top_p: list[float], min_p: list[float]) -> torch.Tensor:
    """Set to -inf the logits [R, V] outside each row's kept set; one setting per row, neutral = off.

    top_k: keep the tokens whose logit is >= the k-th largest (so ties at the k-th are all kept).
    top_p: keep the smallest set of most likely tokens whose probability reaches top_p, plus every token
           tied with the least likely of them (computed after top_k, on its renormalised distribution).
    min_p: keep the tokens with probability >= min_p * the largest probability.
    The most likely token always survives. Returns a new tensor."""
    R, V = logits.shape
    device, neg_inf = logits.device, float("-inf")
    use_k, use_p, use_min = any(k > 0 for k in top_k), any(p < 1 for p in top_p), any(m > 0 for m in min_p)
    if use_k or use_p:
        sorted_x = logits.sort(dim=-1, descending=True).values
        if use_k:
            k = torch.tensor([min(k, V) if k > 0 else V for k in top_k], device=device)
            kth = sorted_x.gather(-1, (k - 1)[:, None])
            logits = logits.masked_fill(logits < kth, neg_inf)
            sorted_x = sorted_x.masked_fill(sorted_x < kth, neg_inf)
        if use_p:
            p = torch.tensor(top_p, dtype=torch.float32, device=device)[:, None]
            cum = sorted_x.softmax(-1).cumsum(-1)
            last = (cum < p).sum(-1, keepdim=True).clamp(max=V - 1)   # first position reaching top_p
            cut = torch.where(p < 1, sorted_x.gather(-1, last), neg_inf)
            logits = logits.masked_fill(logits < cut, neg_inf)
    if use_min:
        log_min_p = torch.tensor([math.log(m) if m > 0 else neg_inf for m in min_p], device=device)[:, None]
        cut = logits.amax(-1, keepdim=True) + log_min_p
        logits = logits.masked_fill(logits < cut, neg_inf)
    return logits


CHECKED = 64   # candidates a constrained row checks one by one before it takes its whole token mask


def first_allowed(constraint, scores: torch.Tensor | None, logits: torch.Tensor) -> int:
    """The best-scored token that `constraint` allows: by `scores` among those it keeps (> 0: inside the
    truncated set), then by the logits. The first CHECKED candidates are checked one by one (the usual case:
    one of the first few is allowed); past them, the constraint's whole mask (when it has one) picks the best
    allowed token at once. When no token at all is allowed, the most likely one, which the sequence takes as
    its end."""
    mask = None
    for ranking, floor in ((scores, 0.0), (logits, float("-inf"))):
        if ranking is None:
            continue
        for n, t in enumerate(_ranked(ranking, floor)):
            if constraint.allows(t):
                return t
            if n + 1 >= CHECKED and hasattr(constraint, "mask"):
                break
        if hasattr(constraint, "mask"):
            mask = constraint.mask() if mask is None else mask
            masked = ranking.masked_fill(~mask.to(ranking.device), float("-inf"))
            best = int(masked.argmax())
            if masked[best] > floor:
                return best
    return int(logits.argmax())


def _ranked(ranking: torch.Tensor, floor: float):
    """Token ids best first while their ranking is above floor, fetched in growing top-k blocks."""
    V, seen, k = ranking.shape[-1], 0, 8
    while seen < V:
        values, ids = ranking.topk(min(k, V))
        for v, t in zip(values[seen:].tolist(), ids[seen:].tolist()):
            if v <= floor:
                return
            yield t
        seen, k = min(k, V), k * 8


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, top: int):
    """log_softmax of logits [N, V]: (logprob of token_ids [N], top ids [N, top], top logprobs [N, top]).
    Also what `echo` needs for the prompt's tokens."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    chosen = lp.gather(-1, token_ids[:, None].long()).squeeze(-1)
    top_lp, top_ids = lp.topk(top, dim=-1) if top > 0 else (lp[:, :0], lp[:, :0].long())
    return chosen, top_ids, top_lp


def sample(logits: torch.Tensor, params: list[SamplingParams], generators=None,
           output_counts: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None,
           constraints=None) -> Sampled:
    """Next tokens for logits [B, V] (the last position of each row), one SamplingParams per row.

    generators: one torch.Generator or None per row (None: the global RNG), see `make_generator`.
    output_counts [B, V] and prompt_mask [B, V] (rows aligned with logits, e.g. `TokenCounts.rows`)
    are needed only when some row uses penalties. constraints: None, or one per row: None or an object
    whose allows(token_id) says whether the row may take that token (constraints.GrammarConstraint)."""
    B, V = logits.shape
    if len(params) != B or (generators is not None and len(generators) != B):
        raise ValueError(f"sample: {B} rows of logits but {len(params)} params / "
                         f"{'no' if generators is None else len(generators)} generators")
    logits = logits.float()
    if any(p.uses_penalties or p.logit_bias for p in params):
        logits = logits.clone()
        apply_penalties(logits, params, output_counts, prompt_mask)
        apply_logit_bias(logits, params)

    tokens = logits.argmax(dim=-1)
    rows = [i for i, p in enumerate(params) if not p.greedy]
    race = {}   # row -> its p / q scores, for the constrained rows that sample
    if rows:
        device = logits.device
        idx = torch.tensor(rows, device=device)
        chosen = [params[i] for i in rows]
        temps = torch.tensor([p.temperature for p in chosen], dtype=torch.float32, device=device)[:, None]
        x = truncate(logits[idx] / temps, [p.top_k for p in chosen], [p.top_p for p in chosen],
                     [p.min_p for p in chosen])
        probs = x.softmax(dim=-1)
        q = torch.empty_like(probs)
        unseeded = []
        for j, i in enumerate(rows):
            g = generators[i] if generators is not None else None
            if g is None:
                unseeded.append(j)
            else:
                q[j].exponential_(generator=g)
        if len(unseeded) == len(rows):
            q.exponential_()
        elif unseeded:
            q[torch.tensor(unseeded, device=device)] = torch.empty(len(unseeded), V, device=device).exponential_()
        q.clamp_min_(torch.finfo(q.dtype).tiny)   # q == 0 would make 0/0 = nan, which argmax picks
        scores = probs / q
        tokens[idx] = scores.argmax(dim=-1)
        if constraints is not None:
            race = {i: scores[j] for j, i in enumerate(rows) if constraints[i] is not None}
    if constraints is not None:
        for i, c in enumerate(constraints):
            if c is not None and not c.allows(int(tokens[i])):
                tokens[i] = first_allowed(c, race.get(i), logits[i])

    wanted = [p.logprobs for p in params if p.logprobs is not None]
    if not wanted:
        return Sampled(tokens)
    chosen_lp, top_ids, top_lp = token_logprobs(logits, tokens, max(wanted))
    return Sampled(tokens, chosen_lp, top_ids, top_lp)
