"""The model store: one folder per model name under $PUHUI_HOME/models, holding manifest.json, a
README.md model card, and the model's files.

Copy or reference:
- files given by path (`import_path`) are copied in, so the store does not break when the user moves
  or edits them (`copy=False` references them instead);
- files inside installed Python packages (`import_package`, `register_defaults`) are referenced: the
  manifest records their absolute path, sha256, size and mtime, and the model folder holds a symlink to
  each, so `model_dir(name)` is always one folder with every file of the model and disk is not doubled.
  A referenced file that vanished or changed size is reported, naming it, by `get` and `model_file`;
- models puhui trains (`save_model`) and hub pulls (`pull`) are written into the folder.

Every write is atomic: a model is built in `.tmp-<name>-<random>` inside the store root and renamed into
place (an older version is renamed aside first and deleted after), so a crash never leaves half a model
visible; folders starting with a dot are not models.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Iterator

from . import packaged
from .atomic import fsync_dir, fsync_file
from .errors import BadCheckpoint, BadInput, ModelNotFound, Offline, Unsupported
from .formats import check_file
from .progress import Progress, ProgressFn, silent
from .settings import get_settings

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
WEIGHT_SUFFIXES = (".gguf", ".safetensors", ".bin", ".onnx", ".pt", ".pth")
# a model's own files that would collide with ours are kept under another name
_RESERVED = {"manifest.json": "manifest.upstream.json", "README.md": "README.upstream.md"}
_CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".pyd", ".so")


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
    main: str | None = None       # the main weights file, the default of model_file()
    extra: dict = field(default_factory=dict)
    card: str = ""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def file(self, name: str) -> ModelFile:
        for f in self.files:
            if f.name == name:
                return f
        have = ", ".join(f.name for f in self.files)
        raise BadInput(f"model {self.name!r} has no file {name!r} (it has: {have})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        d["files"] = [ModelFile(**{k: v for k, v in f.items() if k in ModelFile.__dataclass_fields__})
                      for f in d.get("files", [])]
        return cls(**d)


# ---------------------------------------------------------------------------------------------- reading

def store_root() -> Path:
    root = get_settings().store_dir
    root.mkdir(parents=True, exist_ok=True)
    _recover(root)
    return root


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInput(f"bad model name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                       f"letter or digit, at most 128 characters (no '/', '..' or leading dot)")
    return name


def list_models() -> list[Manifest]:
    out = []
    for d in sorted(store_root().iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        m = _read_manifest(d)
        if m is not None:
            out.append(m)
    return out


def get(name: str) -> Manifest:
    """The manifest of a model (aliases resolved). A packaged default that is installed but not yet
    registered is registered on first use."""
    real = get_settings().resolve(name)
    check_name(real)
    m = _read_manifest(store_root() / real)
    problem = _refs_problem(m) if m is not None else None
    default = packaged.find(real)
    if (m is None or problem is not None) and default is not None and default.installed():
        return _register_default(default, silent, m)
    if m is None:
        alias = f" (alias of {real!r})" if real != name else ""
        raise ModelNotFound(f"no model {name!r}{alias} in the store {get_settings().store_dir}; "
                            f"see `puhui models list`, or import one with `puhui models import`")
    if problem is not None:
        raise problem
    return m


def model_dir(name: str) -> Path:
    """The model's folder: manifest.json, README.md and every file of the model (referenced ones as symlinks)."""
    return store_root() / get(name).name


def model_file(name: str, filename: str | None = None) -> Path:
    """The real path of one of the model's files, copied or referenced; by default the main weights file."""
    m = get(name)
    if filename is None:
        if m.main is None:
            raise BadInput(f"model {m.name!r} has no main weights file; name one of: "
                           + ", ".join(f.name for f in m.files))
        filename = m.main
    f = m.file(filename)
    path = Path(f.path) if f.path else store_root() / m.name / f.name
    if not path.is_file():
        raise ModelNotFound(f"model {m.name!r}: its file {path} is missing; import the model again")
    return path


def sha256_file(path: str | Path, progress: ProgressFn | None = None) -> str:
    """sha256 of a file, streamed in 1 MiB chunks, reporting bytes done through progress."""
    h, _ = _stream(Path(path), None, progress or silent)
    return h


# ---------------------------------------------------------------------------------------------- writing

def import_path(path: str | Path, name: str, task: str | None = None, progress: ProgressFn | None = None,
                copy: bool = True) -> Manifest:
    """Import a Hugging Face folder, a single .gguf / .safetensors file, or any folder of model files
    (CTranslate2, ONNX voice ...). Files are copied in (copy=False: referenced where they are)."""
    check_name(name)
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder")
    path = path.resolve()
    if path.is_file():
        root, rels = path.parent, [path.name]
    else:
        root, rels = path, _walk(path, skip_code=False)
        if not rels:
            raise BadInput(f"{path}: the folder is empty")
    srcs = [_Src(_stored_name(r), "copy" if copy else "ref", [root / r]) for r in rels]
    facts = _describe(root, rels, task)
    return _install(name, facts, srcs, f"file:{path}", progress or silent)


def import_package(package: str, name: str | None = None, task: str | None = None,
                   progress: ProgressFn | None = None, path: str | None = None) -> Manifest:
    """Import the model carried by an installed Python distribution, referencing its files.
    path: the model's file or folder inside the distribution (relative to site-packages); default: the
    one .gguf file, or the folder holding its weight files (.safetensors/.bin/.onnx ...)."""
    dist = _distribution(package)
    name = check_name(name or re.sub(r"[^A-Za-z0-9._-]", "-", dist.metadata["Name"]).lower())
    root, rels = _package_model(dist, path)
    srcs = [_Src(_stored_name(r), "ref", [root / r]) for r in rels]
    facts = _describe(root, rels, task)
    facts["licence"] = facts.get("licence") or _dist_licence(dist)  # the model's own word first
    prev = _read_manifest(store_root() / name)
    return _install(name, facts, srcs, f"package:{dist.metadata['Name']}=={dist.version}",
                    progress or silent, prev)


def save_model(name: str, task: str, architecture: str | None, format: str,
               files: dict[str, bytes | str | Path], extra: dict | None = None, source: str = "puhui",
               licence: str | None = None, card: str = "", main: str | None = None,
               progress: ProgressFn | None = None) -> Manifest:
    """Write a model puhui made itself (trained, fine-tuned, quantised): each file from bytes or a path
    is written into the model folder. `card` is a description put at the top of the model card."""
    check_name(name)
    if not files:
        raise BadInput(f"save_model {name!r}: no files")
    srcs = []
    for rel, value in files.items():
        rel = _check_rel(rel)
        if isinstance(value, (bytes, bytearray, memoryview)):
            srcs.append(_Src(rel, "data", [], bytes(value)))
        else:
            p = Path(value)
            if not p.is_file():
                raise BadInput(f"save_model {name!r}: {p} is not a file")
            srcs.append(_Src(rel, "copy", [p]))
    rels = [s.name for s in srcs]
    facts = {"task": task, "architecture": architecture, "format": format, "extra": dict(extra or {}),
             "main": main or _main_file(rels, format), "licence": licence, "description": card}
    return _install(name, facts, srcs, source, progress or silent)


def remove(name: str) -> Manifest:
    """Delete a model from the store (referenced package files are left alone). No alias resolution."""
    check_name(name)
    root = store_root()
    final = root / name
    m = _read_manifest(final)
    if m is None:
        real = get_settings().resolve(name)
        hint = f" ({name!r} is an alias of {real!r})" if real != name else ""
        raise ModelNotFound(f"no model {name!r} in the store{hint}; see `puhui models list`")
    old = root / f".old-{name}-{secrets.token_hex(4)}"
    os.rename(final, old)
    fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)
    return m


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
            absent = [p for p in d.packages if packaged._version(p) is None]
            msg = f"skip {d.name}: package {', '.join(absent)} not installed (pip install 'puhui[models]')"
            log.info(msg)
            progress(Progress(msg, 0, 0, finished=True))
            continue
        out.append(_register_default(d, progress, _read_manifest(store_root() / d.name)))
    return out


def pull(hub_id: str, name: str | None = None, task: str | None = None, filename: str | None = None,
         revision: str | None = None, progress: ProgressFn | None = None) -> Manifest:
    """Download a model from the Hugging Face Hub into the store (needs a network).
    filename: one file of the repository to take (e.g. one quantisation of a GGUF repository)."""
    name = check_name(name or hub_id.rstrip("/").split("/")[-1].lower())
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError:
        raise Unsupported("pulling from the Hub needs huggingface_hub: pip install huggingface_hub") from None
    root = store_root()
    dl = root / f".tmp-pull-{name}-{secrets.token_hex(4)}"
    try:
        try:
            info = HfApi().model_info(hub_id, revision=revision)
            listed = [s.rfilename for s in (info.siblings or [])]
            allow = _pull_patterns(hub_id, listed, filename)
            snapshot_download(hub_id, revision=revision, local_dir=str(dl), allow_patterns=allow)
        except Exception as e:
            err = _hub_error(hub_id, e)
            if err is e:
                raise
            raise err from None
        rels = _walk(dl)
        if not rels:
            raise BadInput(f"{hub_id}: nothing to download (files: {', '.join(listed) or 'none'})")
        facts = _describe(dl, rels, task)
        card_data = getattr(info, "card_data", None) or getattr(info, "cardData", None) or {}
        lic = card_data.get("license") if hasattr(card_data, "get") else getattr(card_data, "license", None)
        facts["licence"] = lic if isinstance(lic, str) else facts.get("licence")
        src = f"hf:{hub_id}" + (f"@{revision}" if revision else "")
        return _install(name, facts, [_Src(_stored_name(r), "move", [dl / r]) for r in rels], src,
                        progress or silent)
    finally:
        shutil.rmtree(dl, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- internals

@dataclass
class _Src:
    name: str                  # name inside the model
    how: str                   # "copy" | "ref" | "move" | "join" | "data"
    paths: list[Path]          # one source file, or the pieces of a join
    data: bytes | None = None


def _install(name: str, facts: dict, srcs: list[_Src], source: str, progress: ProgressFn,
             prev: Manifest | None = None) -> Manifest:
    """Validate the sources, build the model in a temp folder, and swap it into place."""
    check_name(name)
    names = [s.name for s in srcs]
    if len(set(names)) != len(names):
        raise BadInput(f"model {name!r}: two files would be stored as the same name")
    for s in srcs:  # refuse bad weights before writing anything
        if s.how in ("copy", "ref", "move"):
            check_file(s.paths[0])
    old_refs = {(f.path, f.size, f.mtime_ns): f.sha256 for f in (prev.files if prev else []) if f.path}
    root = store_root()
    entries = []
    with _building(root, name) as tmp:
        for s in srcs:
            dst = tmp / s.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if s.how == "ref":
                src = s.paths[0]
                st = src.stat()
                sha = old_refs.get((str(src), st.st_size, st.st_mtime_ns))
                if sha is None:
                    sha, _ = _stream(src, None, progress, f"sha256 {s.name}")
                try:
                    dst.symlink_to(src)
                except OSError:  # no symlinks here: model_file() still finds the real path
                    pass
                entries.append(ModelFile(s.name, sha, st.st_size, str(src), st.st_mtime_ns))
                continue
            if s.how == "move":
                sha, _ = _stream(s.paths[0], None, progress, f"sha256 {s.name}")
                try:
                    os.replace(s.paths[0], dst)
                except OSError:
                    sha, _ = _stream(s.paths[0], dst, progress, f"copy {s.name}")
            elif s.how == "data":
                sha = hashlib.sha256(s.data).hexdigest()
                fsync_file(dst, s.data)
            else:  # copy / join
                sha, _ = _stream(s.paths, dst, progress, f"{'copy' if s.how == 'copy' else 'join'} {s.name}")
            if s.how in ("data", "join"):
                try:
                    check_file(dst)
                except BadCheckpoint as e:
                    raise BadCheckpoint(str(e).replace(str(dst), f"{name}/{s.name}")) from None
            entries.append(ModelFile(s.name, sha, dst.stat().st_size))
        m = Manifest(name=name, task=facts["task"], architecture=facts.get("architecture"),
                     format=facts["format"], files=entries, source=source, licence=facts.get("licence"),
                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     main=facts.get("main"), extra=facts.get("extra") or {})
        m.card = _card(m, facts.get("description", ""))
        fsync_file(tmp / "README.md", m.card.encode())
        fsync_file(tmp / "manifest.json", (json.dumps(m.to_dict(), indent=2) + "\n").encode())
    return m


@contextmanager
def _building(root: Path, name: str) -> Iterator[Path]:
    tmp = root / f".tmp-{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
        for d, _, _ in os.walk(tmp):
            fsync_dir(Path(d))
        final = root / name
        old = None
        if final.exists() or final.is_symlink():
            old = root / f".old-{name}-{secrets.token_hex(4)}"
            os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _recover(root: Path) -> None:
    """After a crash: put back a model renamed aside by a swap that never renamed the new one in, and
    delete temp folders a day old. Recent ones may belong to a swap or an import still running."""
    now = time.time()
    for d in root.iterdir():
        if not d.name.startswith((".old-", ".tmp-")):
            continue
        try:
            st = d.stat()
        except OSError:
            continue
        age = now - max(st.st_mtime, st.st_ctime)
        if d.name.startswith(".old-") and age > 60:
            target = root / d.name[len(".old-"):].rsplit("-", 1)[0]
            if not target.exists():
                try:
                    os.rename(d, target)
                    continue
                except OSError:
                    pass
            shutil.rmtree(d, ignore_errors=True)
        elif d.name.startswith(".tmp-") and age > 86400:
            shutil.rmtree(d, ignore_errors=True)


def _stream(srcs: Path | list[Path], dst: Path | None, progress: ProgressFn,
            task: str | None = None) -> tuple[str, int]:
    """sha256 (and size) of one file or the concatenation of several, copying into dst when given."""
    srcs = [srcs] if isinstance(srcs, Path) else list(srcs)
    total = sum(p.stat().st_size for p in srcs)
    task = task or f"sha256 {srcs[0].name}"
    h, done = hashlib.sha256(), 0
    out = open(dst, "wb") if dst is not None else None
    try:
        for src in srcs:
            with open(src, "rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    if out is not None:
                        out.write(chunk)
                    done += len(chunk)
                    progress(Progress(task, done, total))
        if out is not None:
            out.flush()
            os.fsync(out.fileno())
    finally:
        if out is not None:
            out.close()
    progress(Progress(task, done, total, finished=True))
    return h.hexdigest(), done


def _read_manifest(folder: Path) -> Manifest | None:
    try:
        return Manifest.from_dict(json.loads((folder / "manifest.json").read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        log.warning("%s: unreadable manifest (%s); ignored", folder, e)
        return None


def _refs_problem(m: Manifest) -> Exception | None:
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


def _refs_unchanged(m: Manifest) -> bool:
    for f in m.files:
        try:
            st = os.stat(f.path) if f.path else None
        except OSError:
            return False
        if st is not None and (st.st_size, st.st_mtime_ns) != (f.size, f.mtime_ns):
            return False
    return True


def _check_rel(rel: str) -> str:
    parts = Path(rel).parts
    if not rel or Path(rel).is_absolute() or any(p in ("..", ".", "") for p in parts) or "\\" in rel:
        raise BadInput(f"bad file name {rel!r} inside a model: use a relative path without '..'")
    return _stored_name(Path(*parts).as_posix())


def _stored_name(rel: str) -> str:
    return _RESERVED.get(rel, rel)


def _walk(folder: Path, skip_code: bool = True) -> list[str]:
    """The files of a folder as sorted relative posix paths, skipping hidden entries (and Python code)."""
    rels = []
    for d, dirs, files in os.walk(folder):
        dirs[:] = [x for x in dirs if not x.startswith(".") and x != "__pycache__"]
        for fname in files:
            if fname.startswith(".") or (skip_code and fname.endswith(_CODE_SUFFIXES)):
                continue
            rels.append((Path(d) / fname).relative_to(folder).as_posix())
    return sorted(rels)


# ---------------------------------------------------------------------------------------------- packages

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
            return p, _walk(p)
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
    return root, _walk(root)


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
    return "package:" + ",".join(f"{p}=={packaged._version(p)}" for p in d.packages)


def _register_default(d: packaged.PackagedModel, progress: ProgressFn, prev: Manifest | None) -> Manifest:
    source = _package_source(d)
    if prev is not None and prev.source == source and _refs_unchanged(prev):
        return prev
    root, rels = _package_model(_distribution(d.package), d.path)
    joins = {f: [Path(_distribution(p).locate_file(rel)).resolve() for p, rel in pieces]
             for f, pieces in d.parts.items()}
    pieces = {p for paths in joins.values() for p in paths}
    rels = [r for r in rels if r not in joins and root / r not in pieces]
    srcs = [_Src(_stored_name(r), "ref", [root / r]) for r in rels]
    srcs += [_Src(f, "join", paths) for f, paths in joins.items()]
    facts = _describe(root, sorted(rels + list(joins)), d.task)
    facts["licence"] = d.licence
    return _install(d.name, facts, srcs, source, progress, prev)


# ---------------------------------------------------------------------------------------------- what is it

_TASK_BY_HEAD = [("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation"),
                 ("ForSequenceClassification", "classification"), ("ForObjectDetection", "detection"),
                 ("ForSpeechSeq2Seq", "transcription"), ("ForCTC", "transcription"),
                 ("ForTokenClassification", "token-classification"), ("ForMaskedLM", "fill-mask")]
_EMBEDDING_GGUF_ARCHS = {"bert", "nomic-bert", "jina-bert-v2", "modern-bert"}


def _describe(root: Path, rels: list[str], task: str | None) -> dict:
    """format, architecture, task, main file and extra facts of the model made of root/rels."""
    names = set(rels)
    fmt = _format(root, rels)
    facts: dict = {"format": fmt, "architecture": None, "extra": {}, "main": _main_file(rels, fmt)}
    guess = None
    config = _json(root / "config.json") if "config.json" in names else None
    if "README.md" in names:  # a Hub model card: YAML front matter with "license: ..."
        facts["licence"] = _readme_licence(root / "README.md")
    if fmt == "gguf" and facts["main"] and (root / facts["main"]).is_file():
        g = _gguf_facts(root / facts["main"])
        facts["architecture"] = g.pop("architecture", None)
        facts["licence"] = g.pop("licence", None) or facts.get("licence")
        facts["extra"].update(g)
        guess = "embeddings" if facts["architecture"] in _EMBEDDING_GGUF_ARCHS else "text-generation"
    elif isinstance(config, dict):
        archs = config.get("architectures") or []
        facts["architecture"] = config.get("model_type") or (archs[0] if archs else None)
        if archs:
            facts["extra"]["architectures"] = archs
        sentence = ("modules.json" in names or "sentence_bert_config.json" in names
                    or any(r.startswith("1_Pooling/") for r in rels))
        if sentence:
            guess = "embeddings"
            pool = _json(root / "1_Pooling/config.json") if "1_Pooling/config.json" in names else None
            if isinstance(pool, dict):
                modes = [re.sub(r"_?tokens?$", "", k[len("pooling_mode_"):]) for k, v in pool.items()
                         if k.startswith("pooling_mode_") and v is True]
                facts["extra"]["pooling"] = modes[0] if len(modes) == 1 else modes
                if "word_embedding_dimension" in pool:
                    facts["extra"]["dim"] = pool["word_embedding_dimension"]
        for a in archs:
            for head, t in _TASK_BY_HEAD:
                if a.endswith(head):
                    guess = t
                    break
            if guess is None and a.endswith("ForConditionalGeneration"):
                guess = ("transcription" if config.get("model_type") == "whisper" else "text-generation")
            if guess is None and a.endswith("Model"):
                guess = "embeddings"
        if fmt == "ctranslate2" and ("alignment_heads" in config or "suppress_ids" in config):
            facts["architecture"] = facts["architecture"] or "whisper"
            guess = guess or "transcription"
        tok = _json(root / "tokenizer_config.json") if "tokenizer_config.json" in names else None
        if isinstance(tok, dict) and tok.get("chat_template"):
            facts["extra"]["chat_template"] = True
    if fmt == "onnx":
        voice = next((r for r in rels if r.endswith(".onnx.json")), None)
        vc = _json(root / voice) if voice else None
        if isinstance(vc, dict) and "phoneme_id_map" in vc:
            facts["architecture"] = facts["architecture"] or "vits"
            facts["extra"]["sample_rate"] = (vc.get("audio") or {}).get("sample_rate")
            guess = guess or "speech"
    facts["task"] = task or guess
    if not facts["task"]:
        raise BadInput(f"{root}: cannot tell what task this {fmt} model is for; pass --task "
                       f"(text-generation, embeddings, classification, transcription, speech, ...)")
    return facts


def _format(root: Path, rels: list[str]) -> str:
    suffixes = {Path(r).suffix for r in rels}
    if ".gguf" in suffixes:
        return "gguf"
    if ".safetensors" in suffixes:
        return "safetensors"
    if "model.bin" in rels and "config.json" in rels:
        head = b""
        if (root / "model.bin").is_file():  # (not when it is joined from parts later)
            with open(root / "model.bin", "rb") as f:
                head = f.read(2)
        if head[:2] != b"PK" and head[:1] != b"\x80":  # not a torch zip or pickle
            return "ctranslate2"
    if ".onnx" in suffixes:
        return "onnx"
    if suffixes & {".bin", ".pt", ".pth"}:
        return "pytorch"
    return "other"


_PREFERRED_MAIN = {"safetensors": ("model.safetensors.index.json", "model.safetensors"),
                   "ctranslate2": ("model.bin",), "pytorch": ("pytorch_model.bin", "model.bin")}
_MAIN_SUFFIX = {"gguf": (".gguf",), "safetensors": (".safetensors",), "onnx": (".onnx",),
                "pytorch": (".bin", ".pt", ".pth")}


def _main_file(rels: list[str], fmt: str) -> str | None:
    rels = [_stored_name(r) for r in rels]
    for name in _PREFERRED_MAIN.get(fmt, ()):
        if name in rels:
            return name
    matches = [r for r in rels if r.endswith(_MAIN_SUFFIX.get(fmt, ()))] if fmt in _MAIN_SUFFIX else []
    return matches[0] if matches else (rels[0] if len(rels) == 1 else None)


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _readme_licence(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace")[:20000]
    except OSError:
        return None
    front = re.match(r"---\s*\n(.*?)\n---", text, re.S)
    lic = re.search(r"^licen[cs]e:\s*['\"]?([^'\"\n]+?)['\"]?\s*$", front.group(1), re.M) if front else None
    return lic.group(1) if lic else None


def _gguf_facts(path: Path) -> dict:
    """A few facts from a GGUF's metadata: architecture, licence, context length, chat template ..."""
    from .formats.gguf import read_gguf

    g = read_gguf(path)
    meta, tensors = g.metadata, g.tensors
    arch = meta.get("general.architecture")
    out = {"architecture": arch, "licence": meta.get("general.license"), "gguf_name": meta.get("general.name"),
           "file_type": meta.get("general.file_type"), "tensors": len(tensors),
           "context_length": meta.get(f"{arch}.context_length"),
           "chat_template": bool(meta.get("tokenizer.chat_template")),
           "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
           "eos_token_id": meta.get("tokenizer.ggml.eos_token_id")}
    return {k: v for k, v in out.items() if v is not None}


def _card(m: Manifest, description: str = "") -> str:
    lines = [f"# {m.name}", ""]
    if description:
        lines += [description.strip(), ""]
    lines += [f"- task: {m.task}", f"- architecture: {m.architecture or 'unknown'}", f"- format: {m.format}",
              f"- source: {m.source}", f"- licence: {m.licence or 'unknown'}", f"- registered: {m.created}", "",
              "| file | bytes | sha256 |", "|---|---:|---|"]
    lines += [f"| {f.name} | {f.size} | {f.sha256} |" for f in m.files]
    refs = [f.path for f in m.files if f.path]
    if refs:
        where = os.path.commonpath([os.path.dirname(p) for p in refs])
        lines += ["", f"{len(refs)} of the files are referenced in place under {where}, not copied."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- hub

_SKIP_WHEN_SAFETENSORS = (".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".tflite", ".onnx", ".gguf")


def _pull_patterns(hub_id: str, listed: list[str], filename: str | None) -> list[str] | None:
    if filename is not None:
        if listed and filename not in listed:
            raise BadInput(f"{hub_id} has no file {filename!r}")
        return [filename]
    ggufs = [f for f in listed if f.endswith(".gguf")]
    if any(f.endswith(".safetensors") for f in listed):
        keep = [f for f in listed if not f.endswith(_SKIP_WHEN_SAFETENSORS)
                and not f.startswith(("onnx/", "openvino/", "coreml/"))]
        return keep or None
    if len(ggufs) > 1:
        raise BadInput(f"{hub_id} holds several GGUF files; choose one with --file: " + ", ".join(ggufs))
    return None


def _hub_error(hub_id: str, e: Exception) -> Exception:
    try:
        from huggingface_hub import errors as hf
    except ImportError:  # older huggingface_hub
        from huggingface_hub.utils import _errors as hf
    offline_types = tuple(t for t in (getattr(hf, "OfflineModeIsEnabled", None),
                                      getattr(hf, "LocalEntryNotFoundError", None)) if t)
    if isinstance(e, offline_types):
        return Offline(f"cannot reach the Hugging Face Hub to pull {hub_id}: offline "
                       f"(HF_HUB_OFFLINE is set, or no network)")
    gated = getattr(hf, "GatedRepoError", None)
    if gated and isinstance(e, gated):
        return BadInput(f"{hub_id} is gated on the Hugging Face Hub: accept its licence there and set HF_TOKEN")
    missing = tuple(t for t in (getattr(hf, "RepositoryNotFoundError", None),
                                getattr(hf, "RevisionNotFoundError", None)) if t)
    if isinstance(e, missing):
        return ModelNotFound(f"{hub_id}: no such model (or revision) on the Hugging Face Hub")
    network = isinstance(e, OSError) or type(e).__module__.split(".")[0].startswith((
        "httpx", "httpcore", "requests", "urllib3", "huggingface_hub"))
    if not network:
        return e  # a bug or our own error: not hidden behind "offline"
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return Offline(f"cannot reach the Hugging Face Hub to pull {hub_id}: offline? ({type(e).__name__}: "
                   f"{reason[:160]})")
