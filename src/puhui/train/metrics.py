"""Evaluation metrics of scores against held-out labels: AUC and log loss (click-through), HR@k and NDCG@k
(top-k ranking, sampled or over every unseen item). A tie counts against the held-out item."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

K = 10      # the k of HR@k and NDCG@k


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
    """Mean binary cross-entropy of probabilities (clipped to [1e-7, 1 - 1e-7])."""
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    y = np.asarray(labels, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def _hr_ndcg(rank: torch.Tensor, k: int, suffix: str = "") -> dict:
    """HR@k and NDCG@k of 0-based ranks of the held-out items."""
    rank = rank.double()
    hit = rank < k
    return {f"hr@{k}{suffix}": hit.double().mean().item(),
            f"ndcg@{k}{suffix}": torch.where(hit, 1.0 / torch.log2(rank + 2.0), torch.zeros_like(rank)).mean().item()}


def rank_metrics(scores: torch.Tensor, k: int = K) -> dict:
    """HR@k and NDCG@k of score rows whose column 0 is the held-out item; a tie counts against it."""
    return _hr_ndcg((scores[:, 1:] >= scores[:, :1]).sum(1), k)       # 0 = ranked first


@torch.no_grad()
def full_rank_metrics(score: Callable, data, rows: torch.Tensor, exclude, k: int = K, chunk: int = 65536) -> dict:
    """HR@k and NDCG@k ("_full") with the held-out item of each of `rows` (of an Interactions `data`) ranked among
    every item its user has not interacted with in `exclude` (SeenPairs of training and validation).
    `score(tokens, dense)` gives the scores of rows (a recommender model)."""
    n_items = len(data.item_ids)
    items = torch.arange(n_items)
    per = max(1, chunk // n_items)               # held-out rows scored at once
    ranks = []
    for rs in rows.split(per):
        rr = rs.repeat_interleave(n_items)
        it = items.repeat(len(rs))
        s = score(*data.rows(rr, it)).view(len(rs), n_items)
        target = s.gather(1, data.item[rs].unsqueeze(1))
        other = ~exclude.contains(data.user[rr], it).view(len(rs), n_items)
        other[torch.arange(len(rs)), data.item[rs]] = False
        ranks.append(((s >= target) & other).sum(1))
    return _hr_ndcg(torch.cat(ranks), k, "_full")
