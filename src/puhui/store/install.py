"""Writing models into the store: one folder per model name under $PUHUI_HOME/models, holding manifest.json,
a README.md model card, and the model's files.

Copy or reference:
- files given by path (`import_path`) are copied in, so the store does not break when the user moves or edits
  them (`copy=False` references them instead);
- referenced files (and the files of installed packages, see packages.py) stay where they are: the manifest
  records their absolute path, sha256, size and mtime, and the model folder holds a symlink to each, so the
  folder is always one folder with every file of the model and disk is not doubled;
- models puhui makes (`save_model`: trained, fine-tuned, quantised) and hub pulls are written into the folder.

Every write is atomic: a model is built in `.tmp-<name>-<random>` inside the store root and renamed into place
(an older version is renamed aside to `.old-<name>-<random>` first and deleted after; a removed model is renamed
to `.del-<name>-<random>` and deleted), so a crash never leaves half a model visible; folders starting with a
dot are not models. Each `.tmp-` and `.old-` folder holds a `.puhui-writer` file naming the process that made it
(pid, its start time, host and pid namespace). After a crash, the next store operation (`store_root()`) at once
puts back a model renamed aside by a swap that never finished and deletes the temp folders, when their writer is
gone (no such process on this host); a `.del-` folder is deleted at once. A folder whose writer is alive is left
alone; one whose writer cannot be told (an older puhui's, another host's) waits a minute (`.old-`) or a day
(`.tmp-`).

Every file is hashed (sha256, streamed in 1 MiB chunks, reporting progress) as it is copied, and recorded with
its size and mtime; weights are checked (formats.check_file) before anything is written. A referenced file,
hashed in place, is remembered as checked (integrity.py); a copy is read back once, at its first load.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..atomic import fsync_dir, fsync_file
from ..errors import BadCheckpoint, BadInput, ModelNotFound
from ..formats import check_file
from ..progress import Progress, ProgressFn, silent
from ..settings import get_settings
from . import integrity
from .describe import describe, main_file, task_name, walk
from .manifest import CARD, MANIFEST, Manifest, ModelFile, check_name, check_rel, read_manifest, stored_name

CHUNK = 1 << 20


def store_root() -> Path:
    """The store's folder (created when missing), recovered from any crashed swap."""
    root = get_settings().store_dir
    root.mkdir(parents=True, exist_ok=True)
    _recover(root)
    return root


def sha256_file(path: str | Path, progress: ProgressFn | None = None) -> str:
    """sha256 of a file, streamed in 1 MiB chunks, reporting bytes done through progress."""
    h, _ = _stream(Path(path), None, progress or silent)
    return h


# ---------------------------------------------------------------------------------------------- writing

def import_path(path: str | Path, name: str, task: str | None = None, progress: ProgressFn | None = None,
                copy: bool = True, base: str | None = None) -> Manifest:
    """Import a Hugging Face folder, a single .gguf / .safetensors file, a PEFT LoRA adapter folder, or any
    folder of model files (CTranslate2, ONNX voice ...). Files are copied in (copy=False: referenced where they
    are). An adapter records its base, a store model (`base`, or the adapter_config.json's
    base_model_name_or_path when that names one), with the sha256 of the base's weights."""
    check_name(name)
    task = task_name(task) if task else None
    path = Path(path).expanduser()
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder")
    path = path.resolve()
    if path.is_file():
        root, rels = path.parent, [path.name]
    else:
        root, rels = path, walk(path, skip_code=False)
        if not rels:
            raise BadInput(f"{path}: the folder is empty")
    srcs = [Source(stored_name(r), "copy" if copy else "ref", [root / r]) for r in rels]
    facts = describe(root, rels, task)
    if "adapter" in facts["extra"]:
        facts["extra"]["adapter"].update(adapter_base(base or facts["extra"]["adapter"]["peft_base"], path))
    elif base is not None:
        raise BadInput(f"{path}: --base is for LoRA adapters (a folder with adapter_config.json)", param="base")
    return install_model(name, facts, srcs, f"file:{path}", progress or silent)


def adapter_base(base: str | None, where) -> dict:
    """{"base", "base_sha256"} of an adapter's base, a text-generation model of the store."""
    from . import get

    if not base:
        raise BadInput(f"{where}: a LoRA adapter: say which store model it adapts (--base NAME)", param="base")
    try:
        m = get(base)
    except (ModelNotFound, BadInput):
        raise BadInput(f"{where}: the adapter's base {base!r} is not a model of the store (import it first, or "
                       f"pass --base NAME)", param="base") from None
    if m.task != "text-generation" or "adapter" in m.extra:
        raise BadInput(f"{where}: base {base!r} is a {m.task} {'adapter' if 'adapter' in m.extra else 'model'}; "
                       f"an adapter adapts a text-generation model", param="base")
    return {"base": m.name, "base_sha256": {f.name: f.sha256 for f in m.files}.get(m.main)}


def save_model(name: str, task: str, architecture: str | None, format: str,
               files: dict[str, bytes | str | Path], extra: dict | None = None, source: str = "puhui",
               licence: str | None = None, card: str = "", main: str | None = None,
               progress: ProgressFn | None = None) -> Manifest:
    """Write a model puhui made itself (trained, fine-tuned, quantised): each file from bytes or a path
    is written into the model folder. `card` is a description put at the top of the model card."""
    check_name(name)
    task = task_name(task)
    if not files:
        raise BadInput(f"save_model {name!r}: no files")
    srcs = []
    for rel, value in files.items():
        rel = check_rel(rel)
        if isinstance(value, (bytes, bytearray, memoryview)):
            srcs.append(Source(rel, "data", [], bytes(value)))
        else:
            p = Path(value)
            if not p.is_file():
                raise BadInput(f"save_model {name!r}: {p} is not a file")
            srcs.append(Source(rel, "copy", [p]))
    rels = [s.name for s in srcs]
    facts = {"task": task, "architecture": architecture, "format": format, "extra": dict(extra or {}),
             "main": main or main_file(rels, format), "licence": licence, "description": card}
    return install_model(name, facts, srcs, source, progress or silent)


def remove(name: str) -> Manifest:
    """Delete a model from the store (referenced package files are left alone). No alias resolution."""
    check_name(name)
    root = store_root()
    final = root / name
    m = read_manifest(final)
    if m is None:
        real = get_settings().resolve(name)
        hint = f" ({name!r} is an alias of {real!r})" if real != name else ""
        raise ModelNotFound(f"no model {name!r} in the store{hint}; see `puhui models list`")
    gone = root / f".del-{name}-{secrets.token_hex(4)}"
    os.rename(final, gone)
    fsync_dir(root)
    shutil.rmtree(gone, ignore_errors=True)
    return m


# ---------------------------------------------------------------------------------------------- building

@dataclass
class Source:
    """One file of a model to install."""

    name: str                  # name inside the model
    how: str                   # "copy" | "ref" | "move" | "join" | "data"
    paths: list[Path]          # one source file, or the pieces of a join
    data: bytes | None = None


def install_model(name: str, facts: dict, srcs: list[Source], source: str, progress: ProgressFn,
                  prev: Manifest | None = None) -> Manifest:
    """Validate the sources, build the model in a temp folder, and swap it into place. facts: describe()'s
    (format, architecture, task, main, extra, licence; "description" heads the card). prev: the version being
    replaced, whose referenced files of unchanged size and mtime are not hashed again."""
    check_name(name)
    names = [s.name for s in srcs]
    if len(set(names)) != len(names):
        raise BadInput(f"model {name!r}: two files would be stored as the same name")
    for s in srcs:  # refuse bad weights before writing anything
        if s.how in ("copy", "ref", "move"):
            check_file(s.paths[0])
    old_refs = {(f.path, f.size, f.mtime_ns): f.sha256 for f in (prev.files if prev else []) if f.path}
    old_checked = integrity.read_verified(prev.folder) if prev else {}
    root = store_root()
    entries = []
    checked = {}  # files hashed in place (not copies): remembered as checked (integrity.py)
    with _building(root, name) as tmp:
        for s in srcs:
            dst = tmp / s.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if s.how == "ref":
                src = s.paths[0]
                st = src.stat()
                sha = old_refs.get((str(src), st.st_size, st.st_mtime_ns))
                if sha is None:
                    since = time.time_ns()
                    sha, _ = _stream(src, None, progress, f"sha256 {s.name}")
                    if integrity.settled(st, since) and _unchanged(src, st):
                        checked[s.name] = integrity.entry(st, sha)
                elif old_checked.get(s.name) == integrity.entry(st, sha):
                    checked[s.name] = old_checked[s.name]
                try:
                    dst.symlink_to(src)
                except OSError:  # no symlinks here: Manifest.path() still finds the real path
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
            st = dst.stat()
            entries.append(ModelFile(s.name, sha, st.st_size, mtime_ns=st.st_mtime_ns))
        if checked:
            integrity.remember(tmp, checked)
        m = Manifest(name=name, task=facts["task"], architecture=facts.get("architecture"),
                     format=facts["format"], files=entries, source=source, licence=facts.get("licence"),
                     created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     main=facts.get("main"), extra=facts.get("extra") or {})
        m.card = _card(m, facts.get("description", ""))
        fsync_file(tmp / CARD, m.card.encode())
        fsync_file(tmp / MANIFEST, (json.dumps(m.to_dict(), indent=2) + "\n").encode())
    m.folder = root / name
    return m


WRITER = ".puhui-writer"   # in each .tmp-/.old- folder: "pid start host" of the process that made it


@contextmanager
def _building(root: Path, name: str) -> Iterator[Path]:
    tmp = root / f".tmp-{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    _mark(tmp)
    try:
        yield tmp
        for d, _, _ in os.walk(tmp):
            fsync_dir(Path(d))
        final = root / name
        old = None
        if final.exists() or final.is_symlink():
            old = root / f".old-{name}-{secrets.token_hex(4)}"
            if final.is_dir() and not final.is_symlink():
                try:
                    _mark(final)    # so that, once aside, it says whose swap it is part of
                except OSError:
                    pass            # then recovery waits a minute for it
            os.rename(final, old)
        os.rename(tmp, final)
        (final / WRITER).unlink(missing_ok=True)
        fsync_dir(root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _mark(folder: Path) -> None:
    fsync_file(folder / WRITER, f"{os.getpid()} {_started(os.getpid()) or '-'} {_host()}\n".encode())


def _host() -> str:
    """This host, and this pid namespace (containers on one host that share a store see other pids)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return f"{socket.gethostname()}{ns}".replace(" ", "_")


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (Linux): [0] the state, [19] the start time."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _started(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _writer_alive(folder: Path) -> bool | None:
    """Whether the process that made a .tmp-/.old- folder still runs; None when that cannot be told (no writer
    file, another host's or container's, or a system without a way to ask)."""
    try:
        pid_text, started, host = (folder / WRITER).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if host != _host() or os.name != "posix" or pid <= 0:
        return None
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    fields = _proc_stat(pid)
    if fields is None:  # no /proc here: the pid answers, so it runs
        return True
    if fields[0] in ("Z", "X"):  # killed, not reaped yet by its parent: it writes no more
        return False
    return started == "-" or len(fields) <= 19 or fields[19] == started  # else the pid is another process's now


def _recover(root: Path) -> None:
    """After a crash: put back a model renamed aside by a swap that never renamed the new one in, and delete
    temp folders, at once when their writer is gone; `.del-` folders (removals) always. A folder whose writer
    is alive belongs to a swap or an import still running; one whose writer cannot be told is left a minute
    (`.old-`) or a day (`.tmp-`)."""
    now = time.time()
    for d in root.iterdir():
        if d.name.startswith(".del-"):
            shutil.rmtree(d, ignore_errors=True)
            continue
        if not d.name.startswith((".old-", ".tmp-")):
            continue
        alive = _writer_alive(d)
        if alive:
            continue
        try:
            st = d.stat()
        except OSError:
            continue
        age = now - max(st.st_mtime, st.st_ctime)
        if d.name.startswith(".old-") and (alive is False or age > 60):
            target = root / d.name[len(".old-"):].rsplit("-", 1)[0]
            if not target.exists():
                try:
                    os.rename(d, target)
                    (target / WRITER).unlink(missing_ok=True)
                    fsync_dir(root)
                    continue
                except OSError:
                    pass
            shutil.rmtree(d, ignore_errors=True)
        elif d.name.startswith(".tmp-") and (alive is False or age > 86400):
            shutil.rmtree(d, ignore_errors=True)


def _unchanged(path: Path, st: os.stat_result) -> bool:
    try:
        now = path.stat()
    except OSError:
        return False
    return (now.st_size, now.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


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
