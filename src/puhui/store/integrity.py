"""Whether a model's files are still the files its manifest records: checked cheaply where a file is opened for
loading (`Manifest.path`, `Manifest.verify`), and in full by `puhui models verify` (`store.verify`).

The manifest records each file's sha256, size and mtime at install. A file's full sha256 is computed again only:
- on its first load after import (a copy was hashed from its source as it was written; the copy itself is read
  here once), and when its size or mtime differ from those of its last full check;
- by `verify`, which reads every byte of every file, whatever was recorded.
Each full check that matches is remembered in the model folder's `.puhui-verified.json` (file name -> size,
mtime_ns and sha256 when checked; written atomically; carried over by nothing, so a re-import starts afresh), so
that every later load costs one stat and one small read per file, and a multi-GB GGUF is hashed once, not at
every load. A file whose size differs is damaged without hashing. Referenced files (package files) are hashed in
place at install, so they are remembered from then.

Racy timestamps: a check is remembered only when the file's mtime is older than RACY_NS when the hash starts
(and unchanged when it ends), so a write within the same timestamp tick as the remembered mtime cannot go
unseen (git's "racy clean" rule); such a file is hashed again at its next load.

What a check cannot see: damage that keeps a file's size and mtime (a deliberate `touch -r`); `verify` sees it.

This module sits below manifest.py and imports nothing of the store.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import write_atomic
from ..progress import Progress, ProgressFn, silent

log = logging.getLogger(__name__)

VERIFIED = ".puhui-verified.json"
RACY_NS = 2_000_000_000        # a file modified less than this before its check is not remembered as checked
CHUNK = 1 << 20


@dataclass(frozen=True)
class Problem:
    """What is wrong with one file of a model."""

    file: str       # its name inside the model
    problem: str    # "missing", "sha256 mismatch", or "size N bytes, recorded M"
    path: str       # where it was looked for

    @property
    def damaged(self) -> bool:
        return self.problem != "missing"

    def line(self) -> str:
        return f"damaged: {self.file} ({self.problem})" if self.damaged else f"missing: {self.file}"


@dataclass
class Report:
    """The full check of one model: its problems, none when every file is what the manifest records."""

    model: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.problems:
            return "ok"
        return "damaged" if any(p.damaged for p in self.problems) else "missing"

    def line(self) -> str:
        return "ok" if not self.problems else ", ".join(p.line() for p in self.problems)

    def to_dict(self) -> dict:
        return {"model": self.model, "status": self.status,
                "files": [{"file": p.file, "problem": p.problem, "path": p.path} for p in self.problems]}


def file_sha256(path: str | Path, progress: ProgressFn = silent, task: str | None = None) -> str:
    """sha256 of a file, streamed in 1 MiB chunks, reporting bytes done through progress."""
    path = Path(path)
    task = task or f"sha256 {path.name}"
    total = path.stat().st_size
    h, done = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            done += len(chunk)
            progress(Progress(task, done, total))
    progress(Progress(task, done, total, finished=True))
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- remembered checks

def entry(st: os.stat_result, sha256: str) -> dict:
    """What is remembered of a file that matched its sha256 when it had this stat."""
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def settled(st: os.stat_result, since_ns: int) -> bool:
    """Whether a check begun at since_ns (time.time_ns()) of a file with this stat may be remembered."""
    return since_ns - st.st_mtime_ns > RACY_NS


def read_verified(folder: Path | None) -> dict:
    if folder is None:
        return {}
    try:
        d = json.loads((Path(folder) / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    files = d.get("files") if isinstance(d, dict) else None
    return files if isinstance(files, dict) else {}


def remember(folder: Path, entries: dict[str, dict | None]) -> None:
    """Merge entries (None: forget that file) into the folder's remembered checks, atomically. A store that
    cannot be written (read-only) only means the checks are made again."""
    files = read_verified(folder)
    for name, e in entries.items():
        if e is None:
            files.pop(name, None)
        else:
            files[name] = e
    try:
        write_atomic(Path(folder) / VERIFIED, (json.dumps({"files": files}, indent=1) + "\n").encode())
    except OSError as e:
        log.debug("%s: cannot remember checked files (%s)", folder, e)


# ---------------------------------------------------------------------------------------------- checks

def check(folder: Path | None, f, path: Path, full: bool = False, progress: ProgressFn = silent) -> Problem | None:
    """The problem of one file of a model (f: its ModelFile, path: where it lies), or None when it is fine.
    Cheap when its last full check was remembered at its present size and mtime; full=True always hashes."""
    try:
        st = os.stat(path)
    except OSError:
        return Problem(f.name, "missing", str(path))
    if st.st_size != f.size:
        return Problem(f.name, f"size {st.st_size} bytes, recorded {f.size}", str(path))
    known = read_verified(folder).get(f.name)
    if not full and known == entry(st, f.sha256):
        return None
    if not full:
        log.info("%s: checking its sha256 (%d bytes) before its first use", path, st.st_size)
    since = time.time_ns()
    sha = file_sha256(path, progress, f"sha256 {f.name}")
    if sha != f.sha256:
        if folder is not None and known is not None:
            remember(folder, {f.name: None})
        return Problem(f.name, "sha256 mismatch", str(path))
    try:
        after = os.stat(path)
    except OSError:
        return Problem(f.name, "missing", str(path))
    same = (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    if folder is not None and same and settled(st, since) and known != entry(st, sha):
        remember(folder, {f.name: entry(st, sha)})
    return None
