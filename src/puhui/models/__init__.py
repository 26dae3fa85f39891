"""Lean model definitions, one file each, each with its Hugging Face checkpoint loader."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import Unsupported
from .bert import Bert, BertConfig, load_bert
from .checkpoint import read_config
from .gpt2 import GPT2, GPT2Config, load_gpt2
from .kv_cache import KVCache
from .llama import Llama, LlamaConfig, load_llama

TEXT_LOADERS = {"llama": load_llama, "mistral": load_llama, "qwen2": load_llama, "gpt2": load_gpt2, "bert": load_bert}

__all__ = ["Bert", "BertConfig", "GPT2", "GPT2Config", "KVCache", "Llama", "LlamaConfig",
           "load_bert", "load_gpt2", "load_llama", "load_text_model"]


def load_text_model(path: str | Path, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"):
    """(model, config) of a Hugging Face folder, by its config.json model_type."""
    model_type = read_config(path).get("model_type")
    if model_type not in TEXT_LOADERS:
        raise Unsupported(f"model_type {model_type!r} (supported: {', '.join(TEXT_LOADERS)})")
    return TEXT_LOADERS[model_type](path, dtype=dtype, device=device)
