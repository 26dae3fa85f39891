"""A model's manifest: what the store knows of one model, written as manifest.json in the model's folder.

A `Manifest` knows its folder (set when it is read from disk or installed, never written down) and resolves
its files: `path(name)` is the real path of a copied file (inside the folder) or of a referenced one (where it
lies, recorded with its sha256, size and mtime); `has(name)` says whether the model has a file. Models and
tasks receive a Manifest and find their files through it; they do not look the model up again by name.

Names: a model name is letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128
characters, so it is always one folder of the store root (folders starting with a dot are not models). A file
name inside a model is a relative posix path without '..'; a model's own manifest.json or README.md is kept
under another name (manifest.upstream.json, README.upstream.md), since those two names are ours.

A referenced file that vanished or changed size is a problem of the model, reported naming the file
(`refs_problem`); `refs_unchanged` (same size and mtime) is what lets a re-registration skip re-hashing.

This module is the bottom of store/: it imports nothing else of the store.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import BadCheckpoint, BadInput, ModelNotFound

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CARD = "README.md"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# a model's own files that would collide with ours are kept under another name
_RESERVED = {MANIFEST: "manifest.upstream.json", CARD: "README.upstream.md"}


@dataclass
class ModelFile:
    name: str                     # relative path inside the model (posix)
    sha256: str
    size: int
    path: str | None = None       # absolute path when referenced; None when stored in the model folder
    mtime_ns: int | None = None   # of a referenced file when hashed: unchanged size+mtime means no re-hash


@dataclass
class Manifest:
    name: str
    task: str
    architecture: str | None
    format: str
    files: list[ModelFile]
    source: str
    licence: str | None = None
    created: str = ""
    main: str | None = None       # the main weights file, the default of path()
    extra: dict = field(default_factory=dict)
    card: str = ""
    folder: Path | None = field(default=None, compare=False, repr=False)  # where it lives (not written down)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def path(self, filename: str | None = None) -> Path:
        """The real path of one of the model's files, copied or referenced; by default the main weights file."""
        if filename is None:
            if self.main is None:
                raise BadInput(f"model {self.name!r} has no main weights file; name one of: "
                               + ", ".join(f.name for f in self.files))
            filename = self.main
        f = self.file(filename)
        if f.path:
            path = Path(f.path)
        elif self.folder is not None:
            path = self.folder / f.name
        else:
            raise ModelNotFound(f"model {self.name!r} is not in a store folder, so its file {f.name} cannot be found")
        if not path.is_file():
            raise ModelNotFound(f"model {self.name!r}: its file {path} is missing; import the model again")
        return path

    def has(self, filename: str) -> bool:
        return any(f.name == filename for f in self.files)

    def file(self, name: str) -> ModelFile:
        for f in self.files:
            if f.name == name:
                return f
        have = ", ".join(f.name for f in self.files)
        raise BadInput(f"model {self.name!r} has no file {name!r} (it has: {have})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("folder")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        known = {f.name for f in fields(cls)} - {"folder"}
        d = {k: v for k, v in d.items() if k in known}
        d["files"] = [ModelFile(**{k: v for k, v in f.items() if k in ModelFile.__dataclass_fields__})
                      for f in d.get("files", [])]
        return cls(**d)


def read_manifest(folder: Path) -> Manifest | None:
    """The manifest of the model in `folder`; None when there is none (an unreadable one is logged and ignored)."""
    try:
        m = Manifest.from_dict(json.loads((folder / MANIFEST).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        log.warning("%s: unreadable manifest (%s); ignored", folder, e)
        return None
    m.folder = folder
    return m


def read_json(path: Path, default=None):
    """The content of a JSON file; `default` when it is missing, unreadable or not JSON. (The one reader of the
    optional JSON files of a model folder: configs, tokenizer configs, sentence-transformers modules ...)"""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


# ---------------------------------------------------------------------------------------------- names

def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInput(f"bad model name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                       f"letter or digit, at most 128 characters (no '/', '..' or leading dot)")
    return name


def check_rel(rel: str) -> str:
    """A file name inside a model, checked (relative, no '..'), as it is stored."""
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or any(p in ("..", ".", "") for p in parts) or "\\" in rel:
        raise BadInput(f"bad file name {rel!r} inside a model: use a relative path without '..'")
    return stored_name(Path(*parts).as_posix())


def stored_name(rel: str) -> str:
    """The name a model's file is stored under (its own manifest.json / README.md are renamed)."""
    return _RESERVED.get(rel, rel)


# ---------------------------------------------------------------------------------------------- references

def refs_problem(m: Manifest) -> Exception | None:
    """The error to raise for a model whose referenced file vanished or changed size; None when all are there."""
    for f in m.files:
        if not f.path:
            continue
        try:
            size = os.stat(f.path).st_size
        except OSError:
            return ModelNotFound(f"model {m.name!r}: its file {f.path} is gone (from {m.source}; was the "
                                 f"package uninstalled?); reinstall it, or `puhui models remove {m.name}`")
        if size != f.size:
            return BadCheckpoint(f"model {m.name!r}: its file {f.path} changed size ({f.size} -> {size} bytes); "
                                 f"import the model again")
    return None


def refs_unchanged(m: Manifest) -> bool:
    """Whether every referenced file has the size and mtime it had when hashed."""
    for f in m.files:
        try:
            st = os.stat(f.path) if f.path else None
        except OSError:
            return False
        if st is not None and (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
            return False
    return True
