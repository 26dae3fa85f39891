"""Readers for checkpoint formats. Each validates what it reads and names the file when it is bad."""
from __future__ import annotations

from pathlib import Path

from ..errors import BadCheckpoint


def check_file(path: str | Path) -> str:
    """Validate a weights file by its content; return its format name ("gguf", "safetensors", or "other")."""
    path = Path(path)
    if path.suffix == ".gguf":
        from .gguf import check_gguf
        check_gguf(path)
        return "gguf"
    if path.suffix == ".safetensors":
        from .safetensors import read_header
        read_header(path)
        return "safetensors"
    return "other"


__all__ = ["check_file", "BadCheckpoint"]
