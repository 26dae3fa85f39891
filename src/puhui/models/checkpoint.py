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


def build(cls: type[nn.Module], config, state_dict: dict, dtype: torch.dtype | None = None,
          device: torch.device | str = "cpu", where: str = "checkpoint") -> nn.Module:
    """`cls(config)` holding exactly `state_dict` (our names), tensors moved to device/dtype, in eval mode.

    The model is first built on the meta device and the tensors are assigned, not copied, so a
    memory-mapped checkpoint loaded in its own dtype stays memory-mapped.
    """
    with torch.device("meta"):
        model = cls(config)
    expected = model.state_dict()
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    if missing or unexpected:
        raise BadCheckpoint(f"{where}: tensors do not match the {config.__class__.__name__} "
                            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    for name, t in expected.items():
        if state_dict[name].shape != t.shape:
            raise BadCheckpoint(f"{where}: tensor {name} has shape {tuple(state_dict[name].shape)}, "
                                f"the config says {tuple(t.shape)}")
    tensors = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()
