"""DeepFM training speed and AUC: puhui against deepctr-torch on the same data, split, features, sizes and epochs.

    python bench/recsys.py               # the benchmark; writes bench/results/recsys.json
    python bench/recsys.py --quick       # a smoke run: 1 epoch, 1 repeat
    python bench/recsys.py --repeats 3 --epochs 5 --threads 2

Both train DeepFM on MovieLens-100k's CTR task (label: rating >= 4) with puhui's seeded random 80/10/10 split
(training on the 80%, AUC and log loss on the 10% test rows): the same eight fields (user id, age, gender,
occupation, zip prefix, item id, release year as one-id fields, genres as a multi-hot field mean-pooled over at
most 6 ids), the same ids (puhui's encoder; deepctr gets them per field), embedding size 16, DNN (256, 128)
with ReLU and the same dropout, Adam at the same learning rate, the same batch size, the same number of epochs,
no validation and no early stopping. Each keeps its own initialisation and L2 defaults (deepctr-torch: 1e-5
on every embedding table, every step; puhui: 1e-5 on the embeddings a batch uses).

- puhui: `puhui.train.fit` (the shared Trainer) over a Dataset of pre-built id tensors whose __getitems__
  gathers a whole batch at once; the model looks up every field in one shared embedding table.
- deepctr-torch: `DeepFM(...).fit(x, y, batch_size, epochs, verbose=0)`: verbose=0 is its fastest setting
  (verbose=1 also computes the training AUC with scikit-learn after every batch).

Training samples/s = epochs x training rows / wall time of the training call. The engines run interleaved,
repeat after repeat, each after an untimed warm-up run, and the numbers reported are medians; the load average
is recorded too. Targets, printed
as PASS/FAIL: puhui's test AUC no more than 0.005 below deepctr-torch's, and >= 1.5x its samples/s.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("PUHUI_HOME", str(Path.home() / ".cache" / "puhui"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _machine import machine  # noqa: E402  (bench/_machine.py)

RESULTS = Path(__file__).resolve().parent / "results"
EXTRA_HINT = "pip install 'puhui[bench]'  (or: pip install deepctr-torch)"


def prepare(seed: int):
    from puhui.data import movielens
    from puhui.data.features import FeatureEncoder, build_interactions
    from puhui.data.interactions import random_split

    df = movielens.load()
    tr, va, te = random_split(len(df), seed)
    enc = FeatureEncoder.fit(df.iloc[tr.numpy()], movielens.SPEC)
    data = build_interactions(df, enc)
    return enc, data, tr, te


def run_puhui(enc, data, tr, te, a) -> dict:
    from puhui.data.interactions import RowsDataset, whole_batch
    from puhui.models.deepfm import DeepFM, DeepFMConfig
    from puhui.train import TrainConfig, fit
    from puhui.train.metrics import auc, logloss
    from puhui.train.recommender import deepfm_loss

    torch.manual_seed(a.seed)
    model = DeepFM(DeepFMConfig(n_tokens=enc.n_tokens, token_fields=tuple(enc.token_fields()), n_dense=enc.n_dense,
                                embed_dim=a.embed_dim, hidden=(256, 128), dropout=a.dropout, kind="deepfm"))
    cfg = TrainConfig(epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, optimizer="adam", seed=a.seed)
    t0 = time.perf_counter()
    fit(model, deepfm_loss, RowsDataset(data, tr), cfg, collate_fn=whole_batch)
    wall = time.perf_counter() - t0
    p = model.predict(*data.rows(te)).numpy().astype(np.float64)
    y = data.label[te].numpy()
    return {"engine": "puhui", "train_s": wall, "samples_per_s": a.epochs * len(tr) / wall,
            "test_auc": auc(y, p), "test_logloss": logloss(y, p)}


def deepctr_inputs(enc, data, rows):
    """{field: per-field ids} (deepctr-torch: 0 padding, 1 OOV, then the vocabulary) for data rows."""
    tok, _ = data.rows(rows)
    tok = tok.numpy()
    x, col = {}, 0
    for f in enc.group_fields(dense=False):
        ids = enc.local_ids(tok[:, col:col + f.max_len], f)
        x[f.name] = ids[:, 0] if f.kind == "sparse" else ids
        col += f.max_len
    return x


def run_deepctr(enc, data, tr, te, a) -> dict:
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import DeepFM as DeepCTRDeepFM

    from puhui.train.metrics import auc, logloss

    cols = []
    for f in enc.group_fields(dense=False):
        sf = SparseFeat(f.name, vocabulary_size=f.size + 1, embedding_dim=a.embed_dim)
        cols.append(sf if f.kind == "sparse" else VarLenSparseFeat(sf, maxlen=f.max_len, combiner="mean"))
    x_tr, x_te = deepctr_inputs(enc, data, tr), deepctr_inputs(enc, data, te)
    y_tr = data.label[tr].numpy().astype(np.float32)
    model = DeepCTRDeepFM(cols, cols, dnn_hidden_units=(256, 128), dnn_dropout=a.dropout, seed=a.seed,
                          task="binary", device="cpu")
    model.compile(torch.optim.Adam(model.parameters(), lr=a.lr), "binary_crossentropy")
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):   # it prints "cpu" and "Train on ..."
        model.fit(x_tr, y_tr, batch_size=a.batch_size, epochs=a.epochs, verbose=0, shuffle=True)
    wall = time.perf_counter() - t0
    p = model.predict(x_te, batch_size=65536).reshape(-1)
    y = data.label[te].numpy()
    return {"engine": "deepctr-torch", "train_s": wall, "samples_per_s": a.epochs * len(tr) / wall,
            "test_auc": auc(y, p), "test_logloss": logloss(y, p)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--embed-dim", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="1 epoch, 1 repeat")
    ap.add_argument("--skip-missing", action="store_true", help="run puhui alone when deepctr-torch is missing")
    ap.add_argument("--out", default=str(RESULTS / "recsys.json"))
    a = ap.parse_args()
    if a.quick:
        a.epochs, a.repeats = 1, 1
    torch.set_num_threads(a.threads)

    try:
        import deepctr_torch
        deepctr_version = deepctr_torch.__version__
    except ImportError:
        if not a.skip_missing:
            print(f"deepctr-torch is not installed: {EXTRA_HINT} (or --skip-missing)", file=sys.stderr)
            return 2
        deepctr_version = None

    enc, data, tr, te = prepare(a.seed)
    print(f"MovieLens-100k CTR (rating >= 4): {len(tr)} training rows, {len(te)} test rows; {a.epochs} epochs, "
          f"batch {a.batch_size}, embedding {a.embed_dim}, dnn (256, 128), dropout {a.dropout}, Adam lr {a.lr}, "
          f"{a.threads} threads", flush=True)
    engines = [("puhui", run_puhui)] + ([("deepctr-torch", run_deepctr)] if deepctr_version else [])
    warm = argparse.Namespace(**{**vars(a), "epochs": 1})
    for _, fn in engines:           # untimed: imports, allocator and first-step costs out of the way
        fn(enc, data, tr[:8192], te, warm)
    runs = []
    for rep in range(a.repeats):
        for name, fn in (engines if rep % 2 == 0 else engines[::-1]):
            r = fn(enc, data, tr, te, a)
            r["repeat"] = rep
            runs.append(r)
            print(f"  repeat {rep + 1}: {name:14} {r['samples_per_s']:>10,.0f} samples/s  train {r['train_s']:6.1f} s  "
                  f"test AUC {r['test_auc']:.4f}  log loss {r['test_logloss']:.4f}", flush=True)

    summary = {}
    for name, _ in engines:
        rs = [r for r in runs if r["engine"] == name]
        summary[name] = {k: statistics.median(r[k] for r in rs) for k in ("samples_per_s", "test_auc", "test_logloss",
                                                                          "train_s")}
        summary[name]["samples_per_s_range"] = [min(r["samples_per_s"] for r in rs),
                                                max(r["samples_per_s"] for r in rs)]
    print(f"\n{'engine':16}{'samples/s':>12}{'test AUC':>10}{'log loss':>10}")
    for name, s in summary.items():
        print(f"{name:16}{s['samples_per_s']:>12,.0f}{s['test_auc']:>10.4f}{s['test_logloss']:>10.4f}")
    checks = {}
    if deepctr_version:
        p, d = summary["puhui"], summary["deepctr-torch"]
        speed = p["samples_per_s"] / d["samples_per_s"]
        gap = p["test_auc"] - d["test_auc"]
        checks = {"speed_ratio": speed, "auc_difference": gap,
                  "auc_pass": gap >= -0.005, "speed_pass": speed >= 1.5}
        print(f"\n{'PASS' if checks['auc_pass'] else 'FAIL'}  test AUC: puhui - deepctr-torch = {gap:+.4f} "
              f"(target >= -0.005)")
        print(f"{'PASS' if checks['speed_pass'] else 'FAIL'}  training samples/s: puhui / deepctr-torch = "
              f"{speed:.2f}x (target >= 1.5x)")
    out = {
        "benchmark": "recsys", "data": "MovieLens-100k (recbole==1.2.1 wheel), CTR label rating >= 4",
        "split": f"random 80/10/10, seed {a.seed}; train on 80%, test on 10%",
        "config": {k: v for k, v in vars(a).items() if k not in ("out", "quick", "skip_missing")},
        "train_rows": len(tr), "test_rows": len(te), "runs": runs, "summary": summary, "checks": checks,
        "versions": {"torch": torch.__version__, "deepctr_torch": deepctr_version, "python": platform.python_version()},
        "machine": machine(),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"\nwrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
