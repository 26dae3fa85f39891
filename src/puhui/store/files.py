"""Uploaded files, as OpenAI's Files API keeps them (`client.files.create(file=..., purpose="fine-tune")`):
in PUHUI_HOME/files, each as `{id}` (the bytes) and `{id}.json` (its object: id, bytes, created_at, filename,
purpose, status), both written atomically; the object last, so a file listed is a file whole.

A fine-tune file is checked as it arrives: UTF-8 JSON Lines, every line a JSON object (the chat, prompt/completion
or text forms; the trainer checks each line's content again, with its line number, when it reads it). Nothing
is unpickled; a name is never a path."""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import write_atomic
from ..errors import BadInput, ModelNotFound
from ..settings import get_settings

MAX_BYTES = 512 << 20                      # OpenAI's limit for a fine-tune file is 512 MB
PURPOSES = ("fine-tune", "batch", "assistants", "vision", "user_data", "evals")
_ID = re.compile(r"file-[0-9a-f]{24}")


@dataclass
class FileObject:
    id: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    object: str = "file"
    status: str = "processed"
    status_details: str | None = None


def files_dir() -> Path:
    d = get_settings().home / "files"
    d.mkdir(parents=True, exist_ok=True)
    return d


def save(data: bytes, filename: str, purpose: str) -> FileObject:
    """Store an upload; BadInput (naming "purpose" or "file") when it is not what its purpose needs."""
    if purpose not in PURPOSES:
        raise BadInput(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}", param="purpose")
    if len(data) > MAX_BYTES:
        raise BadInput(f"the file is {len(data):,} bytes; the limit is {MAX_BYTES:,}", param="file")
    if not data:
        raise BadInput("the file is empty", param="file")
    if purpose == "fine-tune":
        check_jsonl(data, filename)
    obj = FileObject(f"file-{secrets.token_hex(12)}", len(data), int(time.time()),
                     Path(filename or "upload").name[:255], purpose)
    d = files_dir()
    write_atomic(d / obj.id, data)
    write_atomic(d / f"{obj.id}.json", json.dumps(asdict(obj)).encode())
    return obj


def check_jsonl(data: bytes, filename: str = "the file") -> int:
    """The number of lines of a JSON Lines fine-tune file; BadInput with the line number of the first bad one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{filename}: not UTF-8 text (byte {e.start})", param="file") from None
    n = 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise BadInput(f"{filename} line {number}: not JSON ({e.msg})", param="file") from None
        if not isinstance(row, dict):
            raise BadInput(f"{filename} line {number}: a JSON object is expected", param="file")
        if not ({"messages"} <= row.keys() or {"prompt", "completion"} <= row.keys() or "text" in row):
            raise BadInput(f"{filename} line {number}: neither messages, prompt/completion nor text", param="file")
        n += 1
    if not n:
        raise BadInput(f"{filename}: no lines", param="file")
    return n


def get(file_id: str) -> FileObject:
    path = _meta(file_id)
    try:
        return FileObject(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise ModelNotFound(f"no file {file_id!r}", param="file_id") from None


def content_path(file_id: str) -> Path:
    get(file_id)
    return files_dir() / file_id


def list_files(purpose: str | None = None) -> list[FileObject]:
    out = []
    for p in files_dir().glob("file-*.json"):
        try:
            obj = FileObject(**json.loads(p.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if purpose is None or obj.purpose == purpose:
            out.append(obj)
    return sorted(out, key=lambda f: (f.created_at, f.id), reverse=True)


def delete(file_id: str) -> None:
    meta = _meta(file_id)
    if not meta.exists():
        raise ModelNotFound(f"no file {file_id!r}", param="file_id")
    meta.unlink()
    (files_dir() / file_id).unlink(missing_ok=True)


def _meta(file_id: str) -> Path:
    if not isinstance(file_id, str) or not _ID.fullmatch(file_id):
        raise ModelNotFound(f"no file {str(file_id)[:80]!r}", param="file_id")
    return files_dir() / f"{file_id}.json"
