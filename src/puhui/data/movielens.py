"""MovieLens-100k, as it ships inside the `recbole==1.2.1` wheel (recbole/dataset_example/ml-100k/).

Only the three tab-separated files are read out of the wheel with zipfile; recbole itself and its
dependencies are never installed or imported. The files are cached in $PUHUI_HOME/data/ml-100k, and the
wheel in $PUHUI_HOME/cache. Where they are looked for, in order:

1. $PUHUI_HOME/data/ml-100k/ml-100k.{inter,user,item} (extracted before);
2. an installed `recbole` package (found without importing it);
3. a recbole-1.2.1 wheel in $PUHUI_HOME/cache;
4. `pip download --no-deps recbole==1.2.1` into $PUHUI_HOME/cache (needs PyPI).

The joined frame has one row a rating: user_id, item_id, rating (1-5), timestamp, the user's age, gender,
occupation and zip_prefix (first two characters of the zip code), and the film's title, release_year and
genres (space-separated, e.g. "Animation Children's Comedy").
"""
from __future__ import annotations

import glob
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Optional

from ..atomic import write_atomic
from ..errors import BadInput, Offline
from ..progress import ProgressFn, say
from ..settings import get_settings
from .features import FeatureSpec

RECBOLE = "recbole==1.2.1"
WHEEL_GLOB = "recbole-1.2.1-*.whl"
IN_WHEEL = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")

# The fields of the joined frame, as a feature spec: label = (rating >= 4).
SPEC = FeatureSpec(
    sparse=("user_id", "item_id", "age", "gender", "occupation", "zip_prefix", "release_year"),
    multi_hot={"genres": " "},
    label="rating", threshold=4.0,
    user="user_id", item="item_id",
    user_features=("age", "gender", "occupation", "zip_prefix"),
    item_features=("genres", "release_year"),
    time="timestamp", item_name="title",
)


def data_dir() -> Path:
    return get_settings().home / "data" / "ml-100k"


def cache_dir() -> Path:
    return get_settings().home / "cache"


def fetch(progress: Optional[ProgressFn] = None) -> Path:
    """Make sure the three files are in data_dir(); return it. Raises Offline when they cannot be had."""
    out = data_dir()
    if all((out / f).is_file() for f in FILES):
        return out
    spec = importlib.util.find_spec("recbole")
    if spec is not None and spec.submodule_search_locations:
        src = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
        if all((src / f).is_file() for f in FILES):
            out.mkdir(parents=True, exist_ok=True)
            for f in FILES:
                write_atomic(out / f, (src / f).read_bytes())
            return out
    wheel = _wheel(progress)
    out.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as z:
            for f in FILES:
                write_atomic(out / f, z.read(IN_WHEEL + f))
    except (zipfile.BadZipFile, KeyError) as e:
        raise BadInput(f"{wheel} is not a usable recbole wheel ({e}); delete it and try again") from None
    say(progress, f"MovieLens-100k extracted from {wheel.name} into {out}")
    return out


def _wheel(progress: Optional[ProgressFn]) -> Path:
    cache = cache_dir()
    found = sorted(glob.glob(str(cache / WHEEL_GLOB)))
    if found:
        return Path(found[-1])
    cache.mkdir(parents=True, exist_ok=True)
    say(progress, f"downloading {RECBOLE} (its data only; 2 MB) into {cache}")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", RECBOLE, "-d", str(cache)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        why = (r.stderr or r.stdout).strip().splitlines()[-1:] if r.returncode else []
    except (OSError, subprocess.TimeoutExpired) as e:
        why = [str(e)]
    found = sorted(glob.glob(str(cache / WHEEL_GLOB)))
    if not found:
        raise Offline(f"MovieLens-100k comes from the {RECBOLE} wheel, which is not in {cache} and could not be "
                      f"downloaded ({why[0] if why else 'no wheel'}). With a network: "
                      f"`pip download --no-deps {RECBOLE} -d {cache}`, or copy the wheel there.")
    return Path(found[-1])


def load(progress: Optional[ProgressFn] = None):
    """The joined ratings frame (100,000 rows)."""
    import pandas as pd

    d = fetch(progress)

    def read(name: str):
        df = pd.read_csv(d / name, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
        df.columns = [c.split(":")[0] for c in df.columns]  # "user_id:token" -> "user_id"
        return df

    inter, users, items = read(FILES[0]), read(FILES[1]), read(FILES[2])
    inter["rating"] = inter["rating"].astype(float)
    inter["timestamp"] = inter["timestamp"].astype(float).astype("int64")
    users["age"] = users["age"].astype(str)
    users["zip_prefix"] = users["zip_code"].str[:2]
    items = items.rename(columns={"movie_title": "title", "class": "genres"})
    items["release_year"] = items["release_year"].replace("", None)
    df = inter.merge(users[["user_id", "age", "gender", "occupation", "zip_prefix"]], on="user_id", how="left")
    df = df.merge(items[["item_id", "title", "release_year", "genres"]], on="item_id", how="left")
    return df

