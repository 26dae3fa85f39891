"""Which sequences the next step computes: continuous batching over a fixed set of cache slots.

Sequences wait in arrival order. A step either prefills waiting sequences that fit (a free slot each, and
a padded prompt batch within the token budget), or, when none fits, decodes one token for every running
sequence. A finished sequence frees its slot at once, so a waiting one joins at the next token boundary.
"""
from __future__ import annotations

from collections import deque

from .sequence import Sequence, Status


class Scheduler:
    def __init__(self, n_slots: int, max_prefill_tokens: int):
        self.n_slots = n_slots
        self.max_prefill_tokens = max_prefill_tokens   # rows x longest prompt of one prefill batch
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.free_slots: list[int] = list(range(n_slots - 1, -1, -1))   # pop() hands out slot 0 first

    def add_slots(self, n_slots: int) -> None:
        """Grow to n_slots slots (the cache grew): the new ones are free, handed out after the free old ones."""
        if n_slots > self.n_slots:
            self.free_slots[:0] = range(n_slots - 1, self.n_slots - 1, -1)
            self.n_slots = n_slots

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> tuple[list[Sequence], bool]:
        """(sequences, is_prefill) for the next step; ([], False) when there is nothing to do."""
        batch: list[Sequence] = []
        longest = 0
        while self.waiting and self.free_slots:
            seq = self.waiting[0]
            longest_if = max(longest, seq.prompt_len)
            if batch and (len(batch) + 1) * longest_if > self.max_prefill_tokens:
                break
            self.waiting.popleft()
            seq.slot = self.free_slots.pop()
            seq.status = Status.RUNNING
            self.running.append(seq)
            batch.append(seq)
            longest = longest_if
        if batch:
            return batch, True
        return list(self.running), False

    def finish(self, seq: Sequence) -> None:
        """Give the slot of a finished sequence back."""
        if seq.slot is not None:
            self.running.remove(seq)
            self.free_slots.append(seq.slot)
            seq.slot = None

    def abort(self, request_id: str) -> list[Sequence]:
        """Drop every sequence of a request, waiting or running; return them."""
        dropped = [s for s in self.waiting if s.request_id == request_id]
        if dropped:
            self.waiting = deque(s for s in self.waiting if s.request_id != request_id)
        for seq in [s for s in self.running if s.request_id == request_id]:
            self.finish(seq)
            dropped.append(seq)
        for seq in dropped:
            seq.status = Status.FINISHED
        return dropped
