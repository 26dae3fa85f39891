"""CSV -> numeric matrix: impute, standardise numbers, one-hot categories. The encoder is plain JSON."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInput

MAX_CATEGORIES = 50  # a text column with more distinct values is an id or free text, not a category
MISSING = "<missing>"


def read_csv(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"data file not found: {path}")
    try:
        df = pd.read_csv(path)
    except Exception as e:  # pandas raises many kinds: EmptyDataError, ParserError, UnicodeDecodeError
        raise BadInput(f"cannot read {path} as CSV: {type(e).__name__}: {e}".splitlines()[0]) from None
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise BadInput(f"{path}: no rows or no columns")
    return df


@dataclass
class TabularEncoder:
    numeric: dict[str, dict] = field(default_factory=dict)        # column -> {median, mean, std}
    categorical: dict[str, list[str]] = field(default_factory=dict)  # column -> categories (train)
    columns: list[str] = field(default_factory=list)               # input columns, in order

    @property
    def feature_names(self) -> list[str]:
        names = []
        for c in self.columns:
            if c in self.numeric:
                names.append(c)
            else:
                names += [f"{c}={v}" for v in self.categorical[c]]
        return names

    @classmethod
    def fit(cls, df, source: str = "data") -> "TabularEncoder":
        import pandas as pd

        enc = cls(columns=list(map(str, df.columns)))
        for c in df.columns:
            col = df[c]
            if pd.api.types.is_bool_dtype(col):
                col = col.astype(float)
            if pd.api.types.is_numeric_dtype(col):
                x = col.astype(float)
                median = float(x.median()) if x.notna().any() else 0.0
                x = x.fillna(median)
                std = float(x.std(ddof=0)) or 1.0
                enc.numeric[str(c)] = {"median": median, "mean": float(x.mean()), "std": std}
            else:
                values = col.astype("string").fillna(MISSING)
                cats = sorted(values.unique().tolist())
                if len(cats) > MAX_CATEGORIES:
                    raise BadInput(f"{source}: column {c!r} is non-numeric with {len(cats)} distinct values "
                                   f"(more than {MAX_CATEGORIES}); it cannot be encoded as a category — drop it")
                enc.categorical[str(c)] = cats
        return enc

    def transform(self, df, source: str = "data") -> np.ndarray:
        import pandas as pd

        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise BadInput(f"{source}: missing column(s) {', '.join(map(repr, missing))}")
        parts = []
        for c in self.columns:
            col = df[c]
            if c in self.numeric:
                s = self.numeric[c]
                x = pd.to_numeric(col, errors="coerce")
                bad = x.isna() & col.notna()
                if bad.any():
                    raise BadInput(f"{source}: column {c!r} should be numeric but holds {col[bad].iloc[0]!r}")
                x = x.fillna(s["median"]).to_numpy(dtype=np.float64)
                parts.append(((x - s["mean"]) / s["std"])[:, None])
            else:
                values = col.astype("string").fillna(MISSING).to_numpy()
                cats = np.asarray(self.categorical[c], dtype=object)
                parts.append((values[:, None] == cats[None, :]).astype(np.float64))  # unseen -> all zeros
        return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(df), 0), np.float32)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TabularEncoder":
        return cls(**d)


def split_xy(df, target: str | None, source: str = "data"):
    """Separate features and target; target defaults to the last column. Rows without a target are dropped."""
    if target is None:
        target = str(df.columns[-1])
    if target not in df.columns:
        raise BadInput(f"{source}: target column {target!r} not found (columns: {', '.join(map(str, df.columns))})")
    df = df[df[target].notna()]
    y = df[target].astype(str).to_numpy()
    if len(set(y)) < 2:
        raise BadInput(f"{source}: target column {target!r} has fewer than two classes")
    return df.drop(columns=[target]), y, target
