"""The model side of a step: the KV cache, batched prefill and decode forward passes, and sampling.

The runner owns the model's static cache (one slot per running sequence) and computes; it decides
nothing about which sequences run (scheduler.py) nor what their tokens mean (sequence.py).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .sampling import Sampled, TokenCounts, sample, token_logprobs
from .sequence import Sequence

ECHO_CHUNK = 256   # prompt positions whose logits are materialised at once for echo's logprobs


class ModelRunner:
    """The model's cache of n_slots sequences of max_seq_len positions, grown in place by `grow`. One runner
    owns a model's cache: a second runner made over the same model takes it over, and the first then refuses
    to run (a clear error instead of reading another engine's keys)."""

    def __init__(self, model: nn.Module, n_slots: int, max_seq_len: int):
        self.model = model
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.n_slots, self.max_seq_len = n_slots, max_seq_len
        self.vocab_size = model.config.vocab_size
        self.counts: TokenCounts | None = None   # made when the first request with penalties comes
        self.adapters = None                      # the engine's AdapterSet once it serves LoRA adapters
        model.setup_cache(n_slots, max_seq_len, dtype=self.dtype, device=self.device)
        holders = [m for m in model.modules() if getattr(m, "kv_cache", None) is not None]
        self._caches = [m.kv_cache for m in holders]
        self._holder = holders[0] if holders else None

    def grow(self, n_slots: int, max_seq_len: int) -> None:
        """At least n_slots slots of max_seq_len positions, keeping what every slot holds."""
        n_slots, max_seq_len = max(n_slots, self.n_slots), max(max_seq_len, self.max_seq_len)
        if (n_slots, max_seq_len) == (self.n_slots, self.max_seq_len):
            return
        self._check_owner()
        for cache in self._caches:
            cache.grow(n_slots, max_seq_len)
        if self.counts is not None:
            self.counts.grow(n_slots)
        self.n_slots, self.max_seq_len = n_slots, max_seq_len

    def _check_owner(self) -> None:
        if self._holder is not None and self._holder.kv_cache is not self._caches[0]:
            raise RuntimeError("another engine was made over this model and took its KV cache; one engine a "
                               "model (a TextGenerator has one: use it)")

    def _select_adapters(self, seqs: list[Sequence]) -> None:
        if self.adapters is not None:
            self.adapters.select([s.request.adapter for s in seqs])

    def _slots(self, seqs: list[Sequence]) -> Tensor:
        return torch.tensor([s.slot for s in seqs], dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence], echo_rows=()) -> tuple[Tensor, dict]:
        """Write the prompts of `seqs` into their slots. Returns the next-token logits [B, V] (the lm head
        runs on each row's last position only) and, for each row in `echo_rows`, the logprobs of its
        prompt tokens 1.. (token_logprobs: chosen [L-1], top ids [L-1, k], top logprobs [L-1, k])."""
        self._check_owner()
        lens = [s.prompt_len for s in seqs]
        B, T = len(seqs), max(lens)
        rows = [s.request.prompt_ids + [0] * (T - n) for s, n in zip(seqs, lens)]
        tokens = torch.tensor(rows, dtype=torch.long, device=self.device)
        length = torch.tensor(lens, dtype=torch.long, device=self.device)
        pos = torch.arange(T, device=self.device).expand(B, T)
        pos = pos.masked_fill(pos >= length[:, None], -1)
        slots = self._slots(seqs)
        for s in seqs:
            if s.params.uses_penalties:
                if self.counts is None:
                    self.counts = TokenCounts(self.n_slots, self.vocab_size, self.device)
                self.counts.start(s.slot, s.request.prompt_ids)
        self._select_adapters(seqs)
        h = self.model.hidden_states(tokens, pos, slots)                       # [B, T, dim]
        logits = self.model.logits(h[torch.arange(B, device=self.device), length - 1])
        echoed = {}
        for i in echo_rows:
            s = seqs[i]
            ids = tokens[i, 1:lens[i]]
            parts = [token_logprobs(self.model.logits(h[i, a:a + ECHO_CHUNK][:len(ids) - a]),
                                    ids[a:a + ECHO_CHUNK], s.params.logprobs)
                     for a in range(0, len(ids), ECHO_CHUNK)]
            echoed[i] = tuple(torch.cat(x) for x in zip(*parts)) if parts else None
        return logits, echoed

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> Tensor:
        """One token for every sequence: its last token at its next position. Logits [B, V]."""
        self._check_owner()
        tokens = torch.tensor([[s.last_token] for s in seqs], dtype=torch.long, device=self.device)
        pos = torch.tensor([[s.num_tokens - 1] for s in seqs], dtype=torch.long, device=self.device)
        self._select_adapters(seqs)
        return self.model.logits(self.model.hidden_states(tokens, pos, self._slots(seqs))[:, -1])

    @torch.inference_mode()
    def sample(self, seqs: list[Sequence], logits: Tensor) -> Sampled:
        params = [s.params for s in seqs]
        generators = [s.generator for s in seqs]
        if all(g is None for g in generators):
            generators = None
        penalised = [i for i, p in enumerate(params) if p.uses_penalties]
        counts = prompt_mask = None
        if penalised:
            counts, prompt_mask = self.counts.rows([s.slot for s in seqs])
        constraints = [s.constraint for s in seqs]
        out = sample(logits, params, generators, counts, prompt_mask,
                     constraints if any(c is not None for c in constraints) else None)
        if penalised:
            self.counts.add([seqs[i].slot for i in penalised], out.tokens[penalised])
        return out
