"""Atomic files for a training run: checkpoint.pt (resumable state), *.safetensors (weights), metrics.json.

Every write goes to a temp file in the same folder, is flushed and fsynced, renamed over the target with
os.replace and the folder is fsynced, so a kill at any moment leaves either the old file or the new one.
checkpoint.pt holds only tensors and plain containers and is read with torch.load(weights_only=True).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..errors import BadCheckpoint


def save_json(path: str | Path, obj) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
    return atomic_write(path, write)


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor]) -> Path:
    """Save a state dict as safetensors. Tensors sharing memory (tied weights) are cloned, as the format needs."""
    from safetensors.torch import save_file
    seen, tensors = set(), {}
    for name, t in state_dict.items():
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        tensors[name] = t
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def load_weights(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path), device=str(device))


def save_checkpoint(path: str | Path, state: dict) -> Path:
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by save_checkpoint. Never unpickles arbitrary objects."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated file, foreign pickle ...
        raise BadCheckpoint(f"cannot read training checkpoint {path}: {e}") from e


# RNG states as tensors and lists, so that weights_only loading accepts them.

def rng_state(loader_generator: torch.Generator) -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": [version, list(internal), py_gauss],
        "loader": loader_generator.get_state(),
    }


def set_rng_state(state: dict, loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, py_gauss = state["python"]
    random.setstate((version, tuple(internal), py_gauss))
    loader_generator.set_state(state["loader"])
