"""Training recommenders: DeepFM (or FM, or Wide&Deep) on interactions, MovieLens-100k by default, evaluated the
standard ways and saved to the store (tasks/recommendation.py's `Recommender` answers from it).

`train_recommender` trains two models of the chosen kind, on two splits, and stores both under one name:

- the CTR model ("ctr"): a seeded random 80/10/10 split of the rows; the label is the spec's (for MovieLens a
  rating >= 4 is a positive); early stopping on validation AUC; test AUC and log loss. It scores rows:
  `Recommender.ctr_scores`, `puhui predict`.
- the ranking model ("ranking"): leave-one-out per user (each user's latest interaction is the test item, the
  one before it the validation item; users with fewer than 3 stay whole in training). Every interaction is a
  positive (implicit feedback) and each is paired with 4 items the user has not interacted with, drawn afresh
  every epoch; early stopping on validation NDCG@10. It ranks items: `Recommender.recommend`.
  Top-k protocol (He et al., NCF, 2017): the test item is ranked among 99 items the user never interacted with,
  drawn at random with a fixed seed: `hr@10`, `ndcg@10`. The full-ranking protocol, the test item among every
  item the user has not interacted with in training or validation, is reported too: `hr@10_full`,
  `ndcg@10_full`. A tie counts against the test item.

Both go through the shared Trainer (`puhui.train.fit`) with `deepfm_loss` and the datasets of
data/interactions.py. The stored model holds ctr.safetensors, ranking.safetensors, features.json (both encoders:
spec, vocabularies, scaling), catalog.json (every user's and item's raw features, item names and interaction
counts) and seen.safetensors (who interacted with what, for exclude_seen).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .. import store
from ..data.features import FeatureEncoder, FeatureSpec, Interactions, build_interactions, column_tokens, times
from ..data.interactions import (CandidatesDataset, RowsDataset, SeenPairs, leave_one_out, load_data, random_split,
                                 sample_candidates, whole_batch)
from ..errors import BadInput, Unsupported
from ..models.deepfm import KINDS, DeepFM, DeepFMConfig
from ..progress import ProgressFn, say
from ..settings import get_settings
from .metrics import K, auc, full_rank_metrics, logloss, rank_metrics
from .trainer import TrainConfig, fit

TASK = "recommendation"
N_CANDIDATES = 100      # the test item and 99 sampled negatives


def deepfm_loss(model, batch):
    """The Trainer's LossFn: a (tokens, dense, label) batch through DeepFM.loss."""
    return model.loss(*batch)


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


def _config(enc: FeatureEncoder, kind: str, embed_dim: int, hidden, dropout: float, l2: float) -> DeepFMConfig:
    return DeepFMConfig(n_tokens=enc.n_tokens, token_fields=tuple(enc.token_fields()), n_dense=enc.n_dense,
                        embed_dim=embed_dim, hidden=tuple(hidden), dropout=dropout, l2_embedding=l2, kind=kind)


def _fit(model, train, val, evaluate, monitor, *, epochs, lr, batch_size, seed, run_dir, resume, patience,
         progress):
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam", seed=seed,
                      out_dir=str(run_dir) if run_dir else None, resume=resume,
                      early_stopping_patience=patience, monitor=monitor, monitor_mode="max")
    return fit(model, deepfm_loss, train, cfg, val_data=val, evaluate=evaluate, collate_fn=whole_batch,
               progress=progress)


def train_ctr(df, spec: FeatureSpec, *, kind: str = "deepfm", epochs: int = 10, embed_dim: int = 16,
              hidden=(256, 128), dropout: float = 0.2, l2: float = 1e-5, lr: float = 3e-3, batch_size: int = 1024,
              min_count: int = 1, seed: int = 0, patience: Optional[int] = 2, run_dir=None, resume: bool = False,
              progress: Optional[ProgressFn] = None, source: str = "data") -> dict:
    """The CTR model on a seeded random 80/10/10 split: {model, encoder, config, metrics, result, ...}."""
    tr, va, te = random_split(len(df), seed)
    if min(len(tr), len(va), len(te)) == 0:
        raise BadInput(f"{source}: {len(df)} rows are too few to split 80/10/10")
    enc = FeatureEncoder.fit(df.iloc[tr.numpy()], spec, min_count=min_count, source=source)
    data = build_interactions(df, enc, source)
    torch.manual_seed(seed)
    cfg = _config(enc, kind, embed_dim, hidden, dropout, l2)
    model = DeepFM(cfg)
    say(progress, f"ctr: {len(tr)}/{len(va)}/{len(te)} rows (train/val/test, random), positives "
                  f"{data.label.mean().item():.1%}, {enc.n_tokens} ids in {len(enc.fields)} fields")
    t0 = time.perf_counter()
    res = _fit(model, RowsDataset(data, tr), RowsDataset(data, va), _ctr_eval, "val_auc", epochs=epochs, lr=lr,
               batch_size=batch_size, seed=seed, run_dir=run_dir, resume=resume, patience=patience,
               progress=progress)
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
                  progress: Optional[ProgressFn] = None, source: str = "data") -> dict:
    """The ranking model on a leave-one-out split, implicit feedback with sampled negatives; HR@10, NDCG@10."""
    if not (spec.user and spec.item):
        raise Unsupported("top-k ranking needs a user and an item column in the spec")
    import pandas as pd

    user_codes = pd.factorize(pd.Series(column_tokens(df[spec.user]), dtype=object))[0]
    t = times(df, spec.time, source) if spec.time else None
    tr, va, te = leave_one_out(user_codes, t, seed)
    if not len(te):
        raise BadInput(f"{source}: no user has 3 or more rows; the leave-one-out split needs some")
    enc = FeatureEncoder.fit(df.iloc[tr.numpy()], spec, min_count=min_count, source=source)
    data = build_interactions(df, enc, source, with_label=False)
    n_items = len(data.item_ids)
    seen_train = SeenPairs(data.user[tr], data.item[tr], n_items)
    seen_fit = SeenPairs(data.user[torch.cat((tr, va))], data.item[torch.cat((tr, va))], n_items)
    seen_all = SeenPairs(data.user, data.item, n_items)
    pool = torch.unique(data.item[tr])                      # items that occur in training
    all_items = torch.arange(n_items)
    val_c = sample_candidates(data, va, seen_all, all_items, N_CANDIDATES - 1, seed + 1)
    test_c = sample_candidates(data, te, seen_all, all_items, N_CANDIDATES - 1, seed + 2)
    torch.manual_seed(seed)
    cfg = _config(enc, kind, embed_dim, hidden, dropout, l2)
    model = DeepFM(cfg)
    say(progress, f"ranking: leave-one-out, {len(tr)} training interactions x (1 + {n_neg} sampled negatives), "
                  f"{len(va)} validation and {len(te)} test users, {N_CANDIDATES - 1} sampled negatives each")
    t0 = time.perf_counter()
    res = _fit(model, RowsDataset(data, tr, n_neg, seen_train, pool), CandidatesDataset(data, va, val_c),
               _rank_eval, f"val_ndcg@{K}", epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
               run_dir=run_dir, resume=resume, patience=patience, progress=progress)
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
                      topk: bool = True, progress: Optional[ProgressFn] = None) -> dict:
    """Train the CTR and the ranking model, evaluate both, save them to the store; return the numbers."""
    if model not in KINDS:
        raise BadInput(f"--model must be one of {', '.join(KINDS)}, not {model!r}")
    if epochs < 1 or batch_size < 1 or lr <= 0 or embed_dim < 1 or n_neg < 1 or any(h < 1 for h in hidden):
        raise BadInput("epochs, batch size, embedding size, hidden sizes, negatives and learning rate must be positive")
    if not 0 <= dropout < 1 or l2 < 0:
        raise BadInput("dropout must be in [0, 1) and l2 >= 0")
    df, spec, source = load_data(data, spec, progress)
    label = "MovieLens-100k" if source == "ml-100k" else str(data)
    stem = "ml-100k" if source == "ml-100k" else Path(str(data)).stem
    name = name or f"{stem}-{model}"
    store.check_name(name)
    spec.check(df, label)
    run_dir = get_settings().runs_dir / name
    opts = dict(kind=model, epochs=epochs, embed_dim=embed_dim, hidden=tuple(hidden), dropout=dropout, l2=l2, lr=lr,
                batch_size=batch_size, min_count=min_count, seed=seed, patience=patience, resume=resume,
                progress=progress, source=label)
    say(progress, f"data: {label}: {len(df)} rows; model {model}, embedding {embed_dim}, dnn {list(hidden)}")
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
    return result


def _named(progress: Optional[ProgressFn], phase: str) -> Optional[ProgressFn]:
    """The progress callback with the phase in front of each bar's name ("ctr epoch 2/10"); messages pass as
    they are (they say their phase themselves where it matters)."""
    if progress is None:
        return None
    return lambda p: progress(p if p.message else replace(p, task=f"{phase} {p.task}"))


def _label_text(spec: FeatureSpec) -> str:
    return f"{spec.label} >= {spec.threshold:g}" if spec.threshold is not None else f"{spec.label} (0/1)"

