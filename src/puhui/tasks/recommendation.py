"""The recommendation task object: a trained recommender from the store (`puhui.load(name)` returns one).

`Recommender(manifest)` opens what train/recommender.py saved: the CTR model scores rows (`ctr_scores`,
`predict_csv`: `puhui predict`, POST /v1/ctr); the ranking model ranks the catalogue's items for a user
(`recommend`: `puhui recommend`, POST /v1/recommendations). The files come from the manifest it is given
(features.json, ctr.safetensors, ranking.safetensors, catalog.json, seen.safetensors); whoever loads it keeps it
(the server holds one per served model), so nothing is cached here.
"""
from __future__ import annotations

import io
import json
import math
import threading
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..atomic import write_atomic
from ..data.features import FeatureEncoder, column_tokens, read_table, token
from ..errors import BadInput, Unsupported
from ..models.deepfm import DeepFM, DeepFMConfig


class Recommender:
    """A trained recommender from the store: `recommend(user)`, `ctr_scores(rows)`, `predict_csv(path)`."""

    task = "recommendation"

    def __init__(self, manifest, **options):
        from safetensors.torch import load_file

        from ..models.loader import load_weights

        if options:
            raise Unsupported(f"a recommendation model takes no load options (got {', '.join(options)})")

        self.manifest, self.name = manifest, manifest.name
        ex = manifest.extra
        enc = json.loads(manifest.path("features.json").read_text())
        self.encoders = {k: FeatureEncoder.from_dict(v) for k, v in enc.items()}
        self.spec = self.encoders["ctr"].spec
        self.models = {}
        for phase, cfg in ex["configs"].items():
            m = DeepFM(DeepFMConfig(**cfg))
            load_weights(m, manifest.path(f"{phase}.safetensors"))
            self.models[phase] = m.eval()
        self.catalog = None
        if self.spec.user or self.spec.item:
            self.catalog = json.loads(manifest.path("catalog.json").read_text())
            seen = load_file(str(manifest.path("seen.safetensors")))
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
