"""Shared by the loaders: read a Hugging Face folder's config.json, build a model on it from a state dict."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import BadCheckpoint, BadInput


def read_config(path: str | Path) -> dict:
    """The config.json of a Hugging Face model folder, as a dict."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise BadInput(f"{path}: not a model folder (no config.json)")
    try:
        config = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadCheckpoint(f"{file}: not JSON ({e})") from None
    if not isinstance(config, dict):
        raise BadCheckpoint(f"{file}: not a JSON object")
    return config


def check_state_dict(expected: dict, state: dict, where: str, what: str, says: str = "it has") -> None:
    """BadCheckpoint, naming `where` and the tensors at fault, unless `state` holds exactly the tensors of
    `expected` (a model's state dict, `what` its class name), name for name and shape for shape."""
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise BadCheckpoint(f"{where}: tensors do not match the {what} "
                            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    for name, t in expected.items():
        if state[name].shape != t.shape:
            raise BadCheckpoint(f"{where}: tensor {name} has shape {tuple(state[name].shape)}, "
                                f"{says} {tuple(t.shape)}")


def build(cls: type[nn.Module], config, state_dict: dict, dtype: torch.dtype | None = None,
          device: torch.device | str = "cpu", where: str = "checkpoint") -> nn.Module:
    """`cls(config)` holding exactly `state_dict` (our names), tensors moved to device/dtype, in eval mode.

    The model is first built on the meta device and the tensors are assigned, not copied, so a
    memory-mapped checkpoint loaded in its own dtype stays memory-mapped.
    """
    with torch.device("meta"):
        model = cls(config)
    check_state_dict(model.state_dict(), state_dict, where, config.__class__.__name__, "the config says")
    tensors = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()
