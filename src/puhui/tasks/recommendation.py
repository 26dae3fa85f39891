"""Recommendation: DeepFM (or FM, or Wide&Deep) trained on interactions, MovieLens-100k by default, evaluated
the standard ways, saved to the store, and answered from it.

`train_recommender` trains two models of the chosen kind, on two splits, and stores both under one name:

- the CTR model ("ctr"): a seeded random 80/10/10 split of the rows; the label is the spec's (for MovieLens a
  rating >= 4 is a positive); early stopping on validation AUC; test AUC and log loss. It scores rows:
  `ctr_scores`, `puhui predict`.
- the ranking model ("ranking"): leave-one-out per user (each user's latest interaction is the test item, the
  one before it the validation item; users with fewer than 3 stay whole in training). Every interaction is a
  positive (implicit feedback) and each is paired with 4 items the user has not interacted with, drawn afresh
  every epoch; early stopping on validation NDCG@10. It ranks items: `recommend`.
  Top-k protocol (He et al., NCF, 2017): the test item is ranked among 99 items the user never interacted with,
  drawn at random with a fixed seed: `hr@10`, `ndcg@10`. The full-ranking protocol, the test item among every
  item the user has not interacted with in training or validation, is reported too: `hr@10_full`,
  `ndcg@10_full`. A tie counts against the test item.

The stored model holds ctr.safetensors, ranking.safetensors, features.json (both encoders: spec, vocabularies,
scaling), catalog.json (every user's and item's raw features, item names and interaction counts) and
seen.safetensors (who interacted with what, for exclude_seen).
"""
from __future__ import annotations

import io
import json
import math
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import store
from ..atomic import write_atomic
from ..data.features import (FeatureEncoder, FeatureSpec, Interactions, build_interactions, column_tokens, read_table,
                             token)
from ..errors import BadInput, Unsupported
from ..models.deepfm import KINDS, DeepFM, DeepFMConfig
from ..progress import ProgressFn
from ..settings import get_settings

TASK = "recommendation"
K = 10                  # HR@K, NDCG@K
N_CANDIDATES = 100      # the test item and 99 sampled negatives
ML100K = ("ml-100k", "movielens-100k", "movielens")


# ------------------------------------------------------------------------------------------------ data

def load_data(data: Optional[str] = None, spec=None, log: Callable[[str], None] = lambda s: None):
    """(frame, spec, source) of MovieLens-100k (data None or "ml-100k") or of a CSV/Parquet file and its spec."""
    if data is None or data.lower() in ML100K:
        from ..data import movielens
        return movielens.load(log), FeatureSpec.read(spec) if spec is not None else movielens.SPEC, "ml-100k"
    if spec is None:
        raise BadInput(f"{data}: a data file needs a feature spec (--spec FILE.json): which columns are sparse, "
                       f"multi_hot, dense, the label, the user and the item")
    return read_table(data), FeatureSpec.read(spec), f"file:{Path(data).resolve()}"


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


class _Seen:
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


def _batch(b):
    """collate_fn: the datasets below build whole batches in __getitems__."""
    return b


class RowsDataset(Dataset):
    """Data rows of an Interactions as (tokens, dense, label) batches, gathered from pre-built tensors.

    With n_neg > 0 every row is a positive (label 1) followed by n_neg negatives: the same row with an item
    the user has not interacted with (from `pool`), drawn afresh each time (torch's global RNG, which the
    Trainer seeds and checkpoints)."""

    def __init__(self, data: Interactions, rows: torch.Tensor, n_neg: int = 0, seen: Optional[_Seen] = None,
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


def sample_candidates(data: Interactions, rows: torch.Tensor, seen: _Seen, pool: torch.Tensor, n_neg: int,
                      seed: int) -> torch.Tensor:
    """[len(rows), 1 + n_neg]: each row's item, then n_neg items its user never interacted with (seeded)."""
    g = torch.Generator().manual_seed(seed)
    users = data.user[rows].repeat_interleave(n_neg)
    negs = seen.sample(users, pool, generator=g, tries=50).view(len(rows), n_neg)
    return torch.cat((data.item[rows].unsqueeze(1), negs), 1)


# ------------------------------------------------------------------------------------------------ metrics

def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney; tied scores share their average rank); NaN with one class."""
    y = np.asarray(labels) > 0.5
    s = np.asarray(scores, np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    uniq, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0            # 1-based average rank of each distinct score
    r = avg_rank[inv]
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def logloss(labels: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def rank_metrics(scores: torch.Tensor, k: int = K) -> dict:
    """HR@k and NDCG@k of score rows whose column 0 is the held-out item; a tie counts against it."""
    rank = (scores[:, 1:] >= scores[:, :1]).sum(1).double()       # 0 = ranked first
    hit = rank < k
    return {f"hr@{k}": hit.double().mean().item(),
            f"ndcg@{k}": torch.where(hit, 1.0 / torch.log2(rank + 2.0), torch.zeros_like(rank)).mean().item()}


@torch.no_grad()
def full_rank_metrics(model: DeepFM, data: Interactions, rows: torch.Tensor, exclude: _Seen, k: int = K,
                      chunk: int = 65536) -> dict:
    """HR@k and NDCG@k with the held-out item ranked among every item its user has not interacted with in
    `exclude` (training and validation)."""
    n_items = len(data.item_ids)
    items = torch.arange(n_items)
    per = max(1, chunk // n_items)               # held-out rows scored at once
    ranks = []
    for rs in rows.split(per):
        rr = rs.repeat_interleave(n_items)
        it = items.repeat(len(rs))
        s = model(*data.rows(rr, it)).view(len(rs), n_items)
        target = s.gather(1, data.item[rs].unsqueeze(1))
        other = ~exclude.contains(data.user[rr], it).view(len(rs), n_items)
        other[torch.arange(len(rs)), data.item[rs]] = False
        ranks.append(((s >= target) & other).sum(1))
    rank = torch.cat(ranks).double()
    hit = rank < k
    return {f"hr@{k}_full": hit.double().mean().item(),
            f"ndcg@{k}_full": torch.where(hit, 1.0 / torch.log2(rank + 2.0), torch.zeros_like(rank)).mean().item()}


def _ctr_eval(model, loader) -> dict:
    ys, ps = [], []
    for tok, den, y in loader:
        ps.append(torch.sigmoid(model(tok, den)).float())
        ys.append(y)
    y, p = torch.cat(ys).numpy(), torch.cat(ps).numpy()
    return {"auc": auc(y, p), "logloss": logloss(y, p)}


def _rank_eval(model, loader) -> dict:
    s = torch.cat([model(tok, den).float() for tok, den, _ in loader])
    return rank_metrics(s.view(-1, N_CANDIDATES))


def _loss(model, batch):
    return model.loss(*batch)


# ------------------------------------------------------------------------------------------------ training

def _config(enc: FeatureEncoder, kind: str, embed_dim: int, hidden, dropout: float, l2: float) -> DeepFMConfig:
    return DeepFMConfig(n_tokens=enc.n_tokens, token_fields=tuple(enc.token_fields()), n_dense=enc.n_dense,
                        embed_dim=embed_dim, hidden=tuple(hidden), dropout=dropout, l2_embedding=l2, kind=kind)


def _fit(model, train, val, evaluate, monitor, *, epochs, lr, batch_size, seed, run_dir, resume, patience,
         progress, log):
    from ..train import TrainConfig, fit

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam", seed=seed,
                      out_dir=str(run_dir) if run_dir else None, resume=resume,
                      early_stopping_patience=patience, monitor=monitor, monitor_mode="max")
    return fit(model, _loss, train, cfg, val_data=val, evaluate=evaluate, collate_fn=_batch, progress=progress,
               log=log)


def train_ctr(df, spec: FeatureSpec, *, kind: str = "deepfm", epochs: int = 10, embed_dim: int = 16,
              hidden=(256, 128), dropout: float = 0.2, l2: float = 1e-5, lr: float = 3e-3, batch_size: int = 1024,
              min_count: int = 1, seed: int = 0, patience: Optional[int] = 2, run_dir=None, resume: bool = False,
              progress: Optional[ProgressFn] = None, log: Callable[[str], None] = lambda s: None,
              source: str = "data") -> dict:
    """The CTR model on a seeded random 80/10/10 split: {model, encoder, config, metrics, result, ...}."""
    tr, va, te = random_split(len(df), seed)
    if min(len(tr), len(va), len(te)) == 0:
        raise BadInput(f"{source}: {len(df)} rows are too few to split 80/10/10")
    enc = FeatureEncoder.fit(df.iloc[tr.numpy()], spec, min_count=min_count, source=source)
    data = build_interactions(df, enc, source)
    torch.manual_seed(seed)
    cfg = _config(enc, kind, embed_dim, hidden, dropout, l2)
    model = DeepFM(cfg)
    log(f"ctr: {len(tr)}/{len(va)}/{len(te)} rows (train/val/test, random), positives "
        f"{data.label.mean().item():.1%}, {enc.n_tokens} ids in {len(enc.fields)} fields")
    t0 = time.perf_counter()
    res = _fit(model, RowsDataset(data, tr), RowsDataset(data, va), _ctr_eval, "val_auc", epochs=epochs, lr=lr,
               batch_size=batch_size, seed=seed, run_dir=run_dir, resume=resume, patience=patience,
               progress=progress, log=log)
    train_s = time.perf_counter() - t0
    model.eval()
    p = model.predict(*data.rows(te)).numpy()
    y = data.label[te].numpy()
    pv = model.predict(*data.rows(va)).numpy()
    metrics = {"test_auc": auc(y, p), "test_logloss": logloss(y, p), "val_auc": auc(data.label[va].numpy(), pv),
               "epochs_run": len(res.history), "best_epoch": res.best_epoch, "train_s": train_s,
               "samples_per_s": float(np.median([h["samples_per_s"] for h in res.history])) if res.history else None}
    return {"model": model, "encoder": enc, "config": cfg, "metrics": metrics, "result": res, "data": data,
            "split": (tr, va, te)}


def train_ranking(df, spec: FeatureSpec, *, kind: str = "deepfm", epochs: int = 10, embed_dim: int = 16,
                  hidden=(256, 128), dropout: float = 0.2, l2: float = 1e-5, lr: float = 3e-3,
                  batch_size: int = 1024, n_neg: int = 4, min_count: int = 1, seed: int = 0,
                  patience: Optional[int] = 2, run_dir=None, resume: bool = False, full_ranking: bool = True,
                  progress: Optional[ProgressFn] = None, log: Callable[[str], None] = lambda s: None,
                  source: str = "data") -> dict:
    """The ranking model on a leave-one-out split, implicit feedback with sampled negatives; HR@10, NDCG@10."""
    if not (spec.user and spec.item):
        raise Unsupported("top-k ranking needs a user and an item column in the spec")
    import pandas as pd

    user_codes = pd.factorize(pd.Series(column_tokens(df[spec.user]), dtype=object))[0]
    from ..data.features import times
    t = times(df, spec.time, source) if spec.time else None
    tr, va, te = leave_one_out(user_codes, t, seed)
    if not len(te):
        raise BadInput(f"{source}: no user has 3 or more rows; the leave-one-out split needs some")
    enc = FeatureEncoder.fit(df.iloc[tr.numpy()], spec, min_count=min_count, source=source)
    data = build_interactions(df, enc, source, with_label=False)
    n_items = len(data.item_ids)
    seen_train = _Seen(data.user[tr], data.item[tr], n_items)
    seen_fit = _Seen(data.user[torch.cat((tr, va))], data.item[torch.cat((tr, va))], n_items)
    seen_all = _Seen(data.user, data.item, n_items)
    pool = torch.unique(data.item[tr])                      # items that occur in training
    all_items = torch.arange(n_items)
    val_c = sample_candidates(data, va, seen_all, all_items, N_CANDIDATES - 1, seed + 1)
    test_c = sample_candidates(data, te, seen_all, all_items, N_CANDIDATES - 1, seed + 2)
    torch.manual_seed(seed)
    cfg = _config(enc, kind, embed_dim, hidden, dropout, l2)
    model = DeepFM(cfg)
    log(f"ranking: leave-one-out, {len(tr)} training interactions x (1 + {n_neg} sampled negatives), "
        f"{len(va)} validation and {len(te)} test users, {N_CANDIDATES - 1} sampled negatives each")
    t0 = time.perf_counter()
    res = _fit(model, RowsDataset(data, tr, n_neg, seen_train, pool), CandidatesDataset(data, va, val_c),
               _rank_eval, f"val_ndcg@{K}", epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
               run_dir=run_dir, resume=resume, patience=patience, progress=progress, log=log)
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        tok, den, _ = CandidatesDataset(data, te, test_c).__getitems__(torch.arange(test_c.numel()))
        metrics = rank_metrics(model.predict(tok, den).view(-1, N_CANDIDATES))
        if full_ranking:
            metrics.update(full_rank_metrics(model, data, te, seen_fit))
    metrics.update(epochs_run=len(res.history), best_epoch=res.best_epoch, train_s=train_s,
                   protocol=f"leave-one-out (latest interaction per user); the test item ranked among "
                            f"{N_CANDIDATES - 1} sampled items the user never interacted with (NCF); _full: among "
                            f"all items not interacted with in training/validation; ties count against")
    return {"model": model, "encoder": enc, "config": cfg, "metrics": metrics, "result": res, "data": data}


def _jsonable(values) -> list:
    out = []
    for v in values:
        if isinstance(v, (np.generic,)):
            v = v.item()
        if isinstance(v, float) and math.isnan(v):
            v = None
        out.append(v)
    return out


def _catalog(df, spec: FeatureSpec, data: Interactions) -> dict:
    """Raw features of every user and item (their latest row), item names and interaction counts."""
    users = {"ids": data.user_ids, "features": {c: _jsonable(df[c].iloc[data.user_rows].tolist())
                                                for c in spec.user_features}}
    counts = torch.bincount(data.item, minlength=len(data.item_ids)).tolist()
    items = {"ids": data.item_ids, "features": {c: _jsonable(df[c].iloc[data.item_rows].tolist())
                                                for c in spec.item_features},
             "names": ([str(v) for v in df[spec.item_name].iloc[data.item_rows].tolist()]
                       if spec.item_name and spec.item_name in df.columns else None),
             "count": counts}
    return {"user": spec.user, "item": spec.item, "users": users, "items": items, "n_users": len(data.user_ids)}


def train_recommender(data: Optional[str] = None, spec=None, *, model: str = "deepfm", epochs: int = 10,
                      embed_dim: int = 16, hidden=(256, 128), dropout: float = 0.2, l2: float = 1e-5,
                      lr: float = 3e-3, batch_size: int = 1024, n_neg: int = 4, min_count: int = 1,
                      patience: Optional[int] = 2, name: Optional[str] = None, seed: int = 0, resume: bool = False,
                      topk: bool = True, progress: Optional[ProgressFn] = None,
                      log: Callable[[str], None] = lambda s: None) -> dict:
    """Train the CTR and the ranking model, evaluate both, save them to the store; return the numbers."""
    if model not in KINDS:
        raise BadInput(f"--model must be one of {', '.join(KINDS)}, not {model!r}")
    if epochs < 1 or batch_size < 1 or lr <= 0 or embed_dim < 1 or n_neg < 1 or any(h < 1 for h in hidden):
        raise BadInput("epochs, batch size, embedding size, hidden sizes, negatives and learning rate must be positive")
    if not 0 <= dropout < 1 or l2 < 0:
        raise BadInput("dropout must be in [0, 1) and l2 >= 0")
    df, spec, source = load_data(data, spec, log)
    label = "MovieLens-100k" if source == "ml-100k" else str(data)
    stem = "ml-100k" if source == "ml-100k" else Path(str(data)).stem
    name = name or f"{stem}-{model}"
    store.check_name(name)
    spec.check(df, label)
    run_dir = get_settings().runs_dir / name
    opts = dict(kind=model, epochs=epochs, embed_dim=embed_dim, hidden=tuple(hidden), dropout=dropout, l2=l2, lr=lr,
                batch_size=batch_size, min_count=min_count, seed=seed, patience=patience, resume=resume,
                progress=progress, log=log, source=label)
    log(f"data: {label}: {len(df)} rows; model {model}, embedding {embed_dim}, dnn {list(hidden)}")
    ctr = train_ctr(df, spec, run_dir=run_dir / "ctr", **{**opts, "progress": _named(progress, "ctr")})
    ranking = None
    if topk and spec.user and spec.item:
        ranking = train_ranking(df, spec, n_neg=n_neg, run_dir=run_dir / "ranking",
                                **{**opts, "progress": _named(progress, "ranking")})

    from safetensors.torch import save

    files: dict[str, bytes | Path] = {
        "ctr.safetensors": save({k: v.contiguous() for k, v in ctr["model"].state_dict().items()})}
    encoders = {"ctr": ctr["encoder"].to_dict()}
    configs = {"ctr": asdict(ctr["config"])}
    cat_data = ctr["data"]
    if ranking is not None:
        files["ranking.safetensors"] = save({k: v.contiguous() for k, v in ranking["model"].state_dict().items()})
        encoders["ranking"] = ranking["encoder"].to_dict()
        configs["ranking"] = asdict(ranking["config"])
        cat_data = ranking["data"]
    for phase, r in (("ctr", ctr), ("ranking", ranking)):
        if r is not None and "plot" in r["result"].paths:
            files[f"loss_curve_{phase}.png"] = r["result"].paths["plot"]
    files["features.json"] = json.dumps(encoders).encode()
    if spec.user or spec.item:
        files["catalog.json"] = json.dumps(_catalog(df, spec, cat_data), default=str).encode()
        files["seen.safetensors"] = save({"user": cat_data.user.int().contiguous(),
                                          "item": cat_data.item.int().contiguous()})
    m = ctr["metrics"]
    rm = ranking["metrics"] if ranking else {}
    result = {
        "model": name, "architecture": model, "data": source, "rows": len(df),
        "test_auc": m["test_auc"], "test_logloss": m["test_logloss"], "val_auc": m["val_auc"],
        f"hr@{K}": rm.get(f"hr@{K}"), f"ndcg@{K}": rm.get(f"ndcg@{K}"),
        f"hr@{K}_full": rm.get(f"hr@{K}_full"), f"ndcg@{K}_full": rm.get(f"ndcg@{K}_full"),
        "topk_protocol": rm.get("protocol"),
        "ctr_split": "random 80/10/10 (seed %d); label: %s" % (seed, _label_text(spec)),
        "epochs": epochs, "ctr_epochs_run": m["epochs_run"], "ctr_best_epoch": m["best_epoch"],
        "ranking_epochs_run": rm.get("epochs_run"), "ranking_best_epoch": rm.get("best_epoch"),
        "train_samples_per_s": m["samples_per_s"], "train_s": m["train_s"] + rm.get("train_s", 0.0),
        "embed_dim": embed_dim, "hidden": list(hidden), "run_dir": str(run_dir),
    }
    files["metrics.json"] = json.dumps(result, indent=2).encode()
    extra = {"kind": model, "configs": configs, "spec": spec.to_dict(), "has_ranking": ranking is not None,
             "metrics": {k: result[k] for k in ("test_auc", "test_logloss", f"hr@{K}", f"ndcg@{K}",
                                                 f"hr@{K}_full", f"ndcg@{K}_full")}}
    card = (f"A {model} recommender trained by puhui on {label}. CTR (random 80/10/10 split, label "
            f"{_label_text(spec)}): test AUC {m['test_auc']:.4f}, log loss {m['test_logloss']:.4f}."
            + (f" Top-k (leave-one-out, 99 sampled negatives): HR@10 {rm['hr@10']:.4f}, NDCG@10 "
               f"{rm['ndcg@10']:.4f}." if ranking else ""))
    store.save_model(name, TASK, model, "safetensors", files, extra=extra, source=source, card=card,
                     main="ctr.safetensors")
    _CACHE.pop(name, None)
    return result


def _named(progress: Optional[ProgressFn], phase: str) -> Optional[ProgressFn]:
    """The progress callback with the phase in front of each task name ("ctr epoch 2/10")."""
    if progress is None:
        return None
    from dataclasses import replace
    return lambda p: progress(replace(p, task=f"{phase} {p.task}"))


def _label_text(spec: FeatureSpec) -> str:
    return f"{spec.label} >= {spec.threshold:g}" if spec.threshold is not None else f"{spec.label} (0/1)"


# ------------------------------------------------------------------------------------------------ serving

class Recommender:
    """A trained recommender from the store: `recommend(user)`, `ctr_scores(rows)`, `predict_csv(path)`."""

    task = TASK

    def __init__(self, manifest, **options):
        from safetensors.torch import load_file

        if options:
            raise Unsupported(f"a recommendation model takes no load options (got {', '.join(options)})")

        self.manifest, self.name = manifest, manifest.name
        ex = manifest.extra
        enc = json.loads(store.model_file(manifest.name, "features.json").read_text())
        self.encoders = {k: FeatureEncoder.from_dict(v) for k, v in enc.items()}
        self.spec = self.encoders["ctr"].spec
        self.models = {}
        for phase, cfg in ex["configs"].items():
            m = DeepFM(DeepFMConfig(**cfg))
            m.load_state_dict(load_file(str(store.model_file(manifest.name, f"{phase}.safetensors"))))
            self.models[phase] = m.eval()
        self.catalog = None
        if self.spec.user or self.spec.item:
            self.catalog = json.loads(store.model_file(manifest.name, "catalog.json").read_text())
            seen = load_file(str(store.model_file(manifest.name, "seen.safetensors")))
            self._seen_user, self._seen_item = seen["user"].long(), seen["item"].long()
            self._user_pos = {u: i for i, u in enumerate(self.catalog["users"]["ids"])}
            self._item_pos = {u: i for i, u in enumerate(self.catalog["items"]["ids"])}
        self._items = None   # encoded item table of the ranking model, built on first use
        self._lock = threading.Lock()

    def _frame(self, side: str, positions: list[int]):
        """Raw catalog features (and the id column) of some users or items."""
        import pandas as pd
        cat = self.catalog[f"{side}s"]
        key = self.spec.user if side == "user" else self.spec.item
        cols = {key: [cat["ids"][p] for p in positions]} if key else {}
        cols.update({c: [v[p] for p in positions] for c, v in cat["features"].items()})
        return pd.DataFrame(cols, index=range(len(positions)))

    def ctr_scores(self, rows) -> list[float]:
        """Click (like) probability of each row: a list of dicts (or a DataFrame) with the spec's feature columns.
        Given the user (item) column, missing user (item) feature columns are taken from the catalog; unseen
        values score with their field's out-of-vocabulary bucket."""
        import pandas as pd

        if isinstance(rows, pd.DataFrame):
            df = rows.reset_index(drop=True)
        else:
            if not isinstance(rows, list) or not rows:
                raise BadInput("rows must be a non-empty list of objects (column -> value)")
            if not all(isinstance(r, dict) for r in rows):
                raise BadInput("each row must be an object (column -> value)")
            df = pd.DataFrame(rows)
        if df.empty:
            raise BadInput("no rows to score")
        df = self._fill(df)
        enc = self.encoders["ctr"]
        missing = [c for c in self.spec.columns if c not in df.columns]
        if missing:
            raise BadInput(f"rows lack column(s) {', '.join(map(repr, missing))} (a row needs: "
                           f"{', '.join(self.spec.columns)})")
        parts = [enc.encode(df, g, "rows") for g in ("user", "item", "context")]
        tok = torch.from_numpy(np.concatenate([p[0] for p in parts], 1))
        den = torch.from_numpy(np.concatenate([p[1] for p in parts], 1))
        return [round(float(v), 6) for v in self.models["ctr"].predict(tok, den)]

    def _fill(self, df):
        """User (item) feature values that a row lacks, taken from the catalog entry of its user (item); an unknown
        user or item leaves them missing (so OOV, or the mean for a dense field)."""
        import pandas as pd

        if self.catalog is None:
            return df
        df = df.copy()
        for side, key, pos in (("user", self.spec.user, getattr(self, "_user_pos", {})),
                               ("item", self.spec.item, getattr(self, "_item_pos", {}))):
            feats = self.catalog[f"{side}s"]["features"]
            if not key or key not in df.columns or not feats:
                continue
            at = [pos.get(t or "") for t in column_tokens(df[key])]
            for c, values in feats.items():
                known = pd.Series([values[p] if p is not None else None for p in at], index=df.index, dtype=object)
                df[c] = known if c not in df.columns else df[c].astype(object).where(df[c].notna(), known)
        return df

    def recommend(self, user, k: int = 10, exclude_seen: bool = False) -> dict:
        """The k items the ranking model scores highest for `user`; an unknown user gets the most popular items
        (cold start, said in `note`)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BadInput(f"k must be a positive integer, not {k!r}")
        if "ranking" not in self.models or self.catalog is None:
            raise Unsupported(f"model {self.name!r} was trained without user and item columns; it cannot rank items")
        uid = token(user)
        items = self.catalog["items"]
        n = len(items["ids"])
        out = {"model": self.name, "user": uid if uid is not None else user, "k": k, "exclude_seen": exclude_seen}
        if uid is None or uid not in self._user_pos:
            scores = torch.tensor(items["count"], dtype=torch.float64) / max(self.catalog["n_users"], 1)
            top = torch.argsort(-scores, stable=True)[:k]
            return {**out, "cold_start": True,
                    "note": f"unknown user {user!r}: the {len(top)} most popular items (score: the share of users "
                            f"who interacted with the item)", "items": self._items_out(top, scores)}
        u = self._user_pos[uid]
        with self._lock:
            if self._items is None:
                self._items = self.encoders["ranking"].encode(self._frame("item", list(range(n))), "item", "catalog")
        it_tok, it_den = self._items
        enc = self.encoders["ranking"]
        u_tok, u_den = enc.encode(self._frame("user", [u]), "user", "catalog")
        n_ctx_t = sum(f.max_len for f in enc.group_fields("context", dense=False))
        n_ctx_d = len(enc.group_fields("context", dense=True))
        tok = torch.from_numpy(np.concatenate((np.repeat(u_tok, n, 0), it_tok, np.zeros((n, n_ctx_t), np.int64)), 1))
        den = torch.from_numpy(np.concatenate((np.repeat(u_den, n, 0), it_den, np.zeros((n, n_ctx_d), np.float32)),
                                              1))
        scores = self.models["ranking"].predict(tok, den).double()
        if exclude_seen:
            scores[self._seen_item[self._seen_user == u]] = -math.inf
        top = torch.argsort(-scores, stable=True)[:k]
        top = top[torch.isfinite(scores[top])]
        return {**out, "cold_start": False, "note": None, "items": self._items_out(top, scores)}

    def _items_out(self, top: torch.Tensor, scores: torch.Tensor) -> list[dict]:
        items = self.catalog["items"]
        names = items.get("names")
        return [{"item": items["ids"][i], **({"name": names[i]} if names else {}), "score": round(float(scores[i]), 6)}
                for i in top.tolist()]

    def predict_csv(self, path: str, out: Optional[str] = None) -> str:
        """CTR scores of every row of a CSV (or Parquet) file: its columns plus `score`. Written to `out` when
        given; the CSV text is returned either way."""
        df = read_table(path)
        res = df.copy()
        res["score"] = self.ctr_scores(df)
        buf = io.StringIO()
        res.to_csv(buf, index=False)
        text = buf.getvalue()
        if out:
            write_atomic(Path(out), text.encode())
        return text


_CACHE: dict[str, tuple[str, Recommender]] = {}
_CACHE_LOCK = threading.Lock()


def _loaded(name: str) -> Recommender:
    m = store.get(name)
    if m.task != TASK:
        raise Unsupported(f"model {name!r} is a {m.task} model, not a recommendation one")
    with _CACHE_LOCK:
        hit = _CACHE.get(m.name)
        if hit is None or hit[0] != m.created:
            hit = (m.created, Recommender(m))
            _CACHE[m.name] = hit
    return hit[1]


def recommend(name: str, user, k: int = 10, exclude_seen: bool = False) -> dict:
    """Top-k items for a user from the store model `name` (see Recommender.recommend)."""
    return _loaded(name).recommend(user, k=k, exclude_seen=exclude_seen)


def ctr_scores(name: str, rows) -> list[float]:
    """Click (like) probabilities of rows from the store model `name` (see Recommender.ctr_scores)."""
    return _loaded(name).ctr_scores(rows)
