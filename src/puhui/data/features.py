"""Recommendation features: a small spec (which columns are sparse, multi-hot, dense, the label, the user and
the item), an encoder with an out-of-vocabulary bucket per field, and interaction tables built from a frame.

Ids. Every sparse and multi-hot field shares one id space, the rows of one embedding table:
id 0 is padding (a zero vector: an empty multi-hot slot, or a context value that is not known); each field
then owns a block of ids, its OOV bucket first (values unseen in training, rarer than min_count, or
missing) and its vocabulary after. A sparse field is one id a row; a multi-hot field is max_len ids a row,
padded with 0. Dense fields are standardised with the training mean and std (missing values: the mean).

Groups. A field belongs to the user (the user column and spec.user_features), the item (the item column
and spec.item_features) or the context (everything else). Tokens and dense values are laid out group by
group, user then item then context, so a row is the concatenation of its user's row, its item's row and its
own context: `Interactions` keeps one table of users, one of items, and the context of every row.

A spec as JSON (or TOML):
    {"sparse": ["user", "item", "city"], "multi_hot": {"tags": "|"}, "dense": ["price"],
     "label": "clicked", "user": "user", "item": "item", "item_features": ["tags", "price"]}
`label` is 0/1, or give `threshold` (label >= threshold is a positive, e.g. a rating >= 4). Optional:
`user_features`, `item_features`, `time` (for the leave-one-out split: each user's latest row is held out),
`item_name` (a column shown beside recommended items). multi_hot is {column: separator} or a list ("|").
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import BadInput, Unsupported

GROUPS = ("user", "item", "context")
MAX_MULTI_HOT = 32     # ids kept per multi-hot value
PAD = 0


@dataclass(frozen=True)
class FeatureSpec:
    sparse: tuple[str, ...] = ()
    multi_hot: dict = field(default_factory=dict)        # column -> separator
    dense: tuple[str, ...] = ()
    label: Optional[str] = None
    threshold: Optional[float] = None
    user: Optional[str] = None
    item: Optional[str] = None
    user_features: tuple[str, ...] = ()
    item_features: tuple[str, ...] = ()
    time: Optional[str] = None
    item_name: Optional[str] = None

    def __post_init__(self):
        tup = lambda v: (v,) if isinstance(v, str) else tuple(v or ())  # noqa: E731
        mh = self.multi_hot
        if isinstance(mh, (list, tuple)):
            mh = {c: "|" for c in mh}
        if not isinstance(mh, dict) or not all(isinstance(s, str) and s for s in mh.values()):
            raise BadInput("spec: multi_hot must map each column to a separator (or be a list of columns)")
        sparse = tup(self.sparse)
        for c in (self.user, self.item):  # the user and item columns are sparse fields
            if c and c not in sparse and c not in mh:
                sparse = (c, *sparse)
        object.__setattr__(self, "sparse", sparse)
        object.__setattr__(self, "multi_hot", dict(mh))
        object.__setattr__(self, "dense", tup(self.dense))
        object.__setattr__(self, "user_features", tup(self.user_features))
        object.__setattr__(self, "item_features", tup(self.item_features))
        cols = self.columns
        dup = [c for c, n in Counter(cols).items() if n > 1]
        if dup:
            raise BadInput(f"spec: column(s) {', '.join(map(repr, dup))} listed as more than one kind")
        if not cols:
            raise BadInput("spec: no feature columns (give sparse, multi_hot or dense)")
        for key in ("user_features", "item_features"):
            bad = [c for c in getattr(self, key) if c not in cols]
            if bad:
                raise BadInput(f"spec: {key} {bad} are not sparse, multi_hot or dense columns")
        both = set(self.user_features) & set(self.item_features)
        if both or self.item in self.user_features or self.user in self.item_features:
            raise BadInput(f"spec: a column cannot be both a user and an item feature ({sorted(both)})")
        if self.user_features and not self.user:
            raise BadInput("spec: user_features needs a user column")
        if self.item_features and not self.item:
            raise BadInput("spec: item_features needs an item column")
        if self.label in cols:
            raise BadInput(f"spec: the label {self.label!r} cannot also be a feature")

    @property
    def columns(self) -> list[str]:
        return [*self.sparse, *self.multi_hot, *self.dense]

    def kind(self, column: str) -> str:
        return "sparse" if column in self.sparse else "multi_hot" if column in self.multi_hot else "dense"

    def group(self, column: str) -> str:
        if column == self.user or column in self.user_features:
            return "user"
        if column == self.item or column in self.item_features:
            return "item"
        return "context"

    def ordered(self) -> list[str]:
        """Feature columns in layout order: user group, item group, context; within a group as listed."""
        head = {"user": [self.user] if self.user else [], "item": [self.item] if self.item else [], "context": []}
        for c in self.columns:
            if c not in (self.user, self.item):
                head[self.group(c)].append(c)
        return [c for g in GROUPS for c in head[g]]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        if not isinstance(d, dict):
            raise BadInput("a feature spec is a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise BadInput(f"spec: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def read(cls, spec: str | Path | dict) -> "FeatureSpec":
        """From a dict, a .json or .toml file, or inline JSON text."""
        if isinstance(spec, dict):
            return cls.from_dict(spec)
        text = str(spec).strip()
        if text.startswith("{"):
            src, raw = "inline spec", text
        else:
            p = Path(text)
            if not p.is_file():
                raise BadInput(f"spec file not found: {p}")
            src, raw = str(p), p.read_text(encoding="utf-8")
            if p.suffix.lower() == ".toml":
                try:
                    import tomllib
                except ModuleNotFoundError:  # Python 3.10
                    import tomli as tomllib
                try:
                    return cls.from_dict(tomllib.loads(raw))
                except tomllib.TOMLDecodeError as e:
                    raise BadInput(f"{src}: not valid TOML: {e}") from None
        try:
            return cls.from_dict(json.loads(raw))
        except json.JSONDecodeError as e:
            raise BadInput(f"{src}: not valid JSON: {e}") from None

    def check(self, df, source: str = "data", label: bool = True) -> None:
        need = self.columns + ([self.label] if label and self.label else [])
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise BadInput(f"{source}: missing column(s) {', '.join(map(repr, missing))} "
                           f"(it has: {', '.join(map(str, df.columns))})")

    def labels(self, df, source: str = "data") -> np.ndarray:
        """The 0/1 label of every row as float32."""
        import pandas as pd

        if not self.label:
            raise BadInput("spec: no label column")
        col = df[self.label]
        y = pd.to_numeric(col.astype(float) if col.dtype == bool else col, errors="coerce")
        if y.isna().any():
            i = int(np.flatnonzero(y.isna().to_numpy())[0])
            raise BadInput(f"{source}: label {self.label!r} must be numeric; row {i} holds {col.iloc[i]!r}")
        y = y.to_numpy(dtype=np.float64)
        if self.threshold is not None:
            return (y >= self.threshold).astype(np.float32)
        if not np.isin(y, (0.0, 1.0)).all():
            raise BadInput(f"{source}: label {self.label!r} is not 0/1; give a threshold in the spec "
                           f"(e.g. \"threshold\": 4 for ratings)")
        return y.astype(np.float32)


def token(v: Any) -> Optional[str]:
    """A value as a vocabulary token: 3, 3.0 and "3" are the same; None, NaN and "" are missing."""
    if type(v) is str:
        return v.strip() or None
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return None
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    s = str(v).strip()
    return s or None


def _factorize(col):
    """(codes [N] with -1 for missing, distinct values) of a pandas Series."""
    import pandas as pd

    try:
        codes, uniq = pd.factorize(col, use_na_sentinel=True)
    except TypeError:  # unhashable values: lists in a multi-hot column (e.g. rows from JSON)
        col = col.map(lambda v: tuple(v) if isinstance(v, (list, np.ndarray)) else v)
        codes, uniq = pd.factorize(col, use_na_sentinel=True)
    return codes, list(uniq)


def column_tokens(col) -> list[Optional[str]]:
    """token() of every value of a pandas Series, computed once a distinct value."""
    codes, uniq = _factorize(col)
    table = np.array([token(v) for v in uniq] + [None], dtype=object)
    return table[codes].tolist()  # code -1 (missing) picks the last entry, None


def tokens(v: Any, sep: str) -> list[str]:
    """A multi-hot value (a string with separators, or a list) as its tokens."""
    if type(v) is str:
        return [s for s in (x.strip() for x in v.split(sep)) if s]
    if isinstance(v, (list, tuple, np.ndarray)):
        return [t for t in map(token, v) if t is not None]
    t = token(v)
    if t is None:
        return []
    return [s for s in (x.strip() for x in t.split(sep)) if s]


@dataclass
class Field:
    name: str
    kind: str                     # "sparse" | "multi_hot" | "dense"
    group: str                    # "user" | "item" | "context"
    vocab: list[str] = field(default_factory=list)
    sep: Optional[str] = None
    max_len: int = 1
    offset: int = 0               # id of this field's OOV bucket; vocab[j] is offset + 1 + j
    mean: float = 0.0
    std: float = 1.0

    @property
    def size(self) -> int:
        """Ids this field owns: the OOV bucket and the vocabulary."""
        return 1 + len(self.vocab)


class FeatureEncoder:
    """Fitted on the training rows; encodes any frame with the spec's columns. Plain JSON (to_dict)."""

    def __init__(self, spec: FeatureSpec, fields: list[Field]):
        self.spec, self.fields = spec, fields
        self.by_name = {f.name: f for f in fields}
        self._index = {f.name: {t: f.offset + 1 + j for j, t in enumerate(f.vocab)} for f in fields}

    @classmethod
    def fit(cls, df, spec: FeatureSpec, min_count: int = 1, source: str = "data") -> "FeatureEncoder":
        spec.check(df, source, label=False)
        fields, offset = [], 1  # id 0 is the shared padding
        for c in spec.ordered():
            f = Field(c, spec.kind(c), spec.group(c))
            if f.kind == "dense":
                x = _numeric(df[c], c, source)
                f.mean = float(np.nanmean(x)) if np.isfinite(x).any() else 0.0
                std = float(np.nanstd(x)) if np.isfinite(x).any() else 0.0
                f.std = std if std > 0 else 1.0
            else:
                if f.kind == "sparse":
                    counts = Counter(column_tokens(df[c]))
                    counts.pop(None, None)
                else:
                    f.sep = spec.multi_hot[c]
                    codes, uniq = _factorize(df[c])
                    lists = [tokens(v, f.sep) for v in uniq]
                    n_rows = np.bincount(codes[codes >= 0], minlength=len(uniq))
                    counts = Counter()
                    for ts, k in zip(lists, n_rows.tolist()):
                        for t in ts:
                            counts[t] += k
                    f.max_len = max(1, min(MAX_MULTI_HOT, max((len(ts) for ts in lists), default=1)))
                f.vocab = [t for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_count]
                f.offset = offset
                offset += f.size
            fields.append(f)
        return cls(spec, fields)

    @property
    def n_tokens(self) -> int:
        """Rows of the shared embedding table (padding included)."""
        return 1 + sum(f.size for f in self.fields if f.kind != "dense")

    def group_fields(self, group: Optional[str] = None, dense: Optional[bool] = None) -> list[Field]:
        return [f for f in self.fields if (group is None or f.group == group)
                and (dense is None or (f.kind == "dense") == dense)]

    def token_fields(self) -> list[int]:
        """For each token column of a full row (user, item, context), the index of its field among token fields."""
        out = []
        for i, f in enumerate(self.group_fields(dense=False)):
            out += [i] * f.max_len
        return out

    @property
    def n_dense(self) -> int:
        return len(self.group_fields(dense=True))

    def encode_field(self, f: Field, col, source: str = "data") -> np.ndarray:
        """Global ids [N, max_len] of a token field, or standardised values [N] of a dense one, from a Series."""
        if f.kind == "dense":
            x = _numeric(col, f.name, source)
            return ((np.where(np.isnan(x), f.mean, x) - f.mean) / f.std).astype(np.float32)
        index, oov = self._index[f.name], f.offset
        if f.kind == "sparse":
            codes, uniq = _factorize(col)
            table = np.array([index.get(token(v), oov) for v in uniq] + [oov], np.int64)  # missing: OOV
            return table[codes][:, None]
        codes, uniq = _factorize(col)
        table = np.zeros((len(uniq) + 1, f.max_len), np.int64)  # the last row, all padding, for missing values
        for r, v in enumerate(uniq):
            ids = [index.get(t, oov) for t in tokens(v, f.sep)][:f.max_len]
            table[r, :len(ids)] = ids
        return table[codes]

    def encode(self, df, group: str, source: str = "data"):
        """(tokens int64 [N, T_group], dense float32 [N, D_group]) of one group's fields."""
        n = len(df)
        toks, dens = [np.zeros((n, 0), np.int64)], [np.zeros((n, 0), np.float32)]
        for f in self.group_fields(group):
            if f.name not in df.columns:
                raise BadInput(f"{source}: missing column {f.name!r}")
            a = self.encode_field(f, df[f.name], source)
            (dens if f.kind == "dense" else toks).append(a[:, None] if f.kind == "dense" else a)
        return np.concatenate(toks, 1), np.concatenate(dens, 1).astype(np.float32)

    def local_ids(self, global_ids: np.ndarray, f: Field) -> np.ndarray:
        """Per-field ids (0 padding, 1 OOV, 2.. vocabulary), for libraries that keep one table a field."""
        return np.where(global_ids == PAD, 0, global_ids - f.offset + 1)

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureEncoder":
        return cls(FeatureSpec.from_dict(d["spec"]), [Field(**f) for f in d["fields"]])


def _numeric(col, name: str, source: str) -> np.ndarray:
    import pandas as pd

    x = pd.to_numeric(col, errors="coerce")
    bad = x.isna() & col.notna() & (col.astype(str).str.strip() != "")
    if bad.any():
        raise BadInput(f"{source}: column {name!r} should be numeric but holds {col[bad].iloc[0]!r}")
    return x.to_numpy(dtype=np.float64)


def read_table(path: str | Path):
    """A CSV or Parquet file as a frame."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"data file not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except ImportError:
            raise Unsupported("reading Parquet needs pyarrow: pip install pyarrow") from None
        except Exception as e:
            raise BadInput(f"cannot read {path} as Parquet: {type(e).__name__}: {e}".splitlines()[0]) from None
    from .tabular import read_csv
    return read_csv(path)


def times(df, col: str, source: str = "data") -> np.ndarray:
    """A time column as float64: numbers as they are, dates and times as seconds since the epoch."""
    import pandas as pd

    x = pd.to_numeric(df[col], errors="coerce")
    if x.isna().any():
        try:
            x = pd.to_datetime(df[col]).astype("int64") / 1e9
        except (ValueError, TypeError):
            raise BadInput(f"{source}: time column {col!r} holds values that are neither numbers nor dates") from None
    return x.to_numpy(dtype=np.float64)


@dataclass
class Interactions:
    """Rows of (user, item, context, label) over a table of users and a table of items, as tensors.

    user_tokens[u] / item_tokens[i] are the encoded fields of user-table row u / item-table row i; a data row r
    is user[r], item[r], ctx_tokens[r], ctx_dense[r], label[r]. Without a user (item) column the table has one
    empty row that every data row points to."""
    user_tokens: torch.Tensor     # [n_users, Tu] int64
    user_dense: torch.Tensor      # [n_users, Du] float32
    item_tokens: torch.Tensor     # [n_items, Ti]
    item_dense: torch.Tensor
    ctx_tokens: torch.Tensor      # [N, Tc]
    ctx_dense: torch.Tensor       # [N, Dc]
    user: torch.Tensor            # [N] int64, row in the user table
    item: torch.Tensor            # [N] int64
    label: torch.Tensor           # [N] float32
    time: Optional[np.ndarray]    # [N] float64 when the spec has a time column
    user_ids: list[str]           # raw id (token) of each user-table row
    item_ids: list[str]
    user_rows: np.ndarray         # the data row each user-table row was taken from (its latest)
    item_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def rows(self, idx: torch.Tensor, items: Optional[torch.Tensor] = None):
        """(tokens [B, T], dense [B, D]) of data rows idx, optionally with other items in place of theirs."""
        it = self.item[idx] if items is None else items
        u = self.user[idx]
        tok = torch.cat((self.user_tokens[u], self.item_tokens[it], self.ctx_tokens[idx]), 1)
        den = torch.cat((self.user_dense[u], self.item_dense[it], self.ctx_dense[idx]), 1)
        return tok, den

    def user_items(self, user_row: int, items: torch.Tensor):
        """(tokens, dense) of one user with each of `items` and no known context (padding, mean)."""
        n = len(items)
        u = torch.full((n,), user_row, dtype=torch.long)
        tok = torch.cat((self.user_tokens[u], self.item_tokens[items],
                         torch.zeros((n, self.ctx_tokens.shape[1]), dtype=torch.long)), 1)
        den = torch.cat((self.user_dense[u], self.item_dense[items],
                         torch.zeros((n, self.ctx_dense.shape[1]))), 1)
        return tok, den


def _table(df, key: Optional[str], enc: FeatureEncoder, group: str, time: Optional[np.ndarray], source: str):
    """One entry per distinct key, with the features of its latest row (by time when there is one):
    (ids, tokens, dense, the data row each entry was taken from, the entry of each data row)."""
    n = len(df)
    if not key:
        toks, dens = enc.encode(df.iloc[:1], group, source)
        return [""], toks, dens, np.zeros(1, np.int64), np.zeros(n, np.int64)
    codes, uniq = _factorize(df[key])
    if (codes < 0).any():
        r = int(np.flatnonzero(codes < 0)[0])
        raise BadInput(f"{source}: column {key!r} is empty in row {r}")
    names = [token(v) or "" for v in uniq]
    if len(set(names)) < len(names):  # 3 and "3": one key
        canon = {k: i for i, k in enumerate(names)}
        codes = np.array([canon[names[c]] for c in codes], np.int64)
    order = np.argsort(time, kind="stable") if time is not None else np.arange(n)
    latest = np.full(len(names), -1, np.int64)
    latest[codes[order]] = order            # a later write wins: each key's latest row
    keep = np.flatnonzero(latest >= 0)
    ids = [names[c] for c in keep]
    srt = sorted(range(len(ids)), key=lambda j: (len(ids[j]), ids[j]) if ids[j].isdigit() else (1 << 30, ids[j]))
    keep = keep[srt]
    ids = [names[c] for c in keep]
    entry = np.full(len(names), -1, np.int64)
    entry[keep] = np.arange(len(keep))
    rows = latest[keep]
    toks, dens = enc.encode(df.iloc[rows], group, source)
    return ids, toks, dens, rows, entry[codes]


def build_interactions(df, enc: FeatureEncoder, source: str = "data", with_label: bool = True) -> Interactions:
    """Encode a whole frame: its users, its items (each with the features of its latest row) and every row."""
    spec = enc.spec
    spec.check(df, source, label=with_label)
    t = times(df, spec.time, source) if spec.time else None
    uids, ut, ud, urows, u = _table(df, spec.user, enc, "user", t, source)
    iids, it, idn, irows, i = _table(df, spec.item, enc, "item", t, source)
    ct, cd = enc.encode(df, "context", source)
    y = spec.labels(df, source) if with_label else np.zeros(len(df), np.float32)
    as_t = torch.from_numpy
    return Interactions(as_t(ut), as_t(ud), as_t(it), as_t(idn), as_t(ct), as_t(cd), as_t(u), as_t(i), as_t(y), t,
                        uids, iids, urows, irows)
