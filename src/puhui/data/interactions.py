"""Interaction data for recommenders: where it comes from, how it is split, and negative sampling.

- `load_data`: MovieLens-100k, or a CSV/Parquet file with its feature spec.
- Splits: `random_split` (seeded 80/10/10 of the rows, for the CTR model) and `leave_one_out` (each user's
  latest row is test, the one before validation, for the ranking model).
- `SeenPairs`: which (user, item) pairs occur, and sampling of items a user has not interacted with.
- Datasets over an `Interactions` (data/features.py) that build whole batches in `__getitems__` (use
  `collate_fn=whole_batch`): `RowsDataset` (rows, optionally each followed by sampled negatives) and
  `CandidatesDataset` (each held-out row with its candidate items, from `sample_candidates`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import BadInput
from ..progress import ProgressFn
from .features import FeatureSpec, Interactions, read_table

ML100K = ("ml-100k", "movielens-100k", "movielens")


def load_data(data: Optional[str] = None, spec=None, progress: Optional[ProgressFn] = None):
    """(frame, spec, source) of MovieLens-100k (data None or "ml-100k") or of a CSV/Parquet file and its spec."""
    if data is None or data.lower() in ML100K:
        from . import movielens
        return movielens.load(progress), FeatureSpec.read(spec) if spec is not None else movielens.SPEC, "ml-100k"
    if spec is None:
        raise BadInput(f"{data}: a data file needs a feature spec (--spec FILE.json): which columns are sparse, "
                       f"multi_hot, dense, the label, the user and the item", param="spec")
    return read_table(data), FeatureSpec.read(spec), f"file:{Path(data).resolve()}"


# ------------------------------------------------------------------------------------------------ splits

def random_split(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> tuple[torch.Tensor, ...]:
    """Seeded random train/validation/test row indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a = int(round(fractions[0] * n))
    b = a + int(round(fractions[1] * n))
    return perm[:a], perm[a:b], perm[b:]


def leave_one_out(user: np.ndarray, time: Optional[np.ndarray], seed: int) -> tuple[torch.Tensor, ...]:
    """Per user with >= 3 rows: the latest row is test, the one before validation (ties in time: seeded random
    order); the rest, and every row of smaller users, is training."""
    n = len(user)
    rnd = np.random.default_rng(seed).random(n)
    order = np.lexsort((rnd, time if time is not None else rnd, user))   # by user, then time
    u = user[order]
    last = np.r_[u[1:] != u[:-1], True]                  # the last row of each user's run
    start = np.r_[True, u[1:] != u[:-1]]
    size = np.diff(np.r_[np.flatnonzero(start), n])
    big = np.repeat(size >= 3, size)
    test = order[last & big]
    second = np.r_[last[1:], False] & big & ~last
    val = order[second]
    train = order[~((last | second) & big)]
    return torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(val)), torch.from_numpy(np.sort(test))


# ------------------------------------------------------------------------------------------------ negatives

class SeenPairs:
    """Which (user row, item row) pairs occur: sorted codes (NumPy, single-threaded: many small calls) and a
    membership test; and sampling of items a user has not interacted with."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int):
        self.n_items = n_items
        self.codes = np.unique(users.numpy().astype(np.int64) * n_items + items.numpy())
        self.per_user = np.bincount(self.codes // n_items) if len(self.codes) else np.zeros(0, np.int64)

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        c = users.numpy().astype(np.int64) * self.n_items + items.numpy()
        if not len(self.codes):
            return torch.zeros(len(c), dtype=torch.bool)
        pos = np.minimum(np.searchsorted(self.codes, c), len(self.codes) - 1)
        return torch.from_numpy(self.codes[pos] == c)

    def sample(self, users: torch.Tensor, pool: torch.Tensor, generator: Optional[torch.Generator] = None,
               tries: int = 20) -> torch.Tensor:
        """For each user an item from pool that the user has not interacted with. A user who has interacted with
        (nearly) all of the pool may get one they have, after `tries` draws."""
        items = pool[torch.randint(len(pool), (len(users),), generator=generator)]
        u = users.numpy()
        seen = self.per_user[np.minimum(u, len(self.per_user) - 1)] if len(self.per_user) else np.zeros(len(u))
        hopeless = torch.from_numpy((seen >= len(pool)) & (u < len(self.per_user)))
        for _ in range(tries):
            bad = self.contains(users, items) & ~hopeless
            if not bad.any():
                break
            items[bad] = pool[torch.randint(len(pool), (int(bad.sum()),), generator=generator)]
        return items


def sample_candidates(data: Interactions, rows: torch.Tensor, seen: SeenPairs, pool: torch.Tensor, n_neg: int,
                      seed: int) -> torch.Tensor:
    """[len(rows), 1 + n_neg]: each row's item, then n_neg items its user never interacted with (seeded)."""
    g = torch.Generator().manual_seed(seed)
    users = data.user[rows].repeat_interleave(n_neg)
    negs = seen.sample(users, pool, generator=g, tries=50).view(len(rows), n_neg)
    return torch.cat((data.item[rows].unsqueeze(1), negs), 1)


# ------------------------------------------------------------------------------------------------ datasets

def whole_batch(b):
    """collate_fn: the datasets below build whole batches in __getitems__."""
    return b


class RowsDataset(Dataset):
    """Data rows of an Interactions as (tokens, dense, label) batches, gathered from pre-built tensors.

    With n_neg > 0 every row is a positive (label 1) followed by n_neg negatives: the same row with an item
    the user has not interacted with (from `pool`), drawn afresh each time (torch's global RNG, which the
    Trainer seeds and checkpoints)."""

    def __init__(self, data: Interactions, rows: torch.Tensor, n_neg: int = 0, seen: Optional[SeenPairs] = None,
                 pool: Optional[torch.Tensor] = None):
        self.data, self.rows, self.n_neg, self.seen, self.pool = data, rows, n_neg, seen, pool
        if n_neg and (seen is None or pool is None or not len(pool)):
            raise ValueError("negative sampling needs seen pairs and a pool of items")

    def __len__(self) -> int:
        return len(self.rows) * (1 + self.n_neg)

    def __getitems__(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.long)
        if not self.n_neg:
            r = self.rows[idx]
            return (*self.data.rows(r), self.data.label[r])
        n = len(self.rows)
        r = self.rows[idx % n]
        neg = idx >= n
        items = self.data.item[r].clone()
        if neg.any():
            items[neg] = self.seen.sample(self.data.user[r[neg]], self.pool)
        return (*self.data.rows(r, items), (~neg).float())

    def __getitem__(self, i):
        return self.__getitems__([i])


class CandidatesDataset(Dataset):
    """Each data row with its candidate items [n, C] (the row's own item first): flat (tokens, dense, label)."""

    def __init__(self, data: Interactions, rows: torch.Tensor, candidates: torch.Tensor):
        self.data, self.rows, self.cands = data, rows, candidates

    def __len__(self) -> int:
        return self.cands.numel()

    def __getitems__(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.long)
        c = self.cands.shape[1]
        r, j = idx // c, idx % c
        return (*self.data.rows(self.rows[r], self.cands[r, j]), (j == 0).float())

    def __getitem__(self, i):
        return self.__getitems__([i])
