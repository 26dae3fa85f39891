"""GPT-2: learned positions, pre-LayerNorm blocks, GELU (tanh), tied lm_head; HF checkpoint loader.

Same forward/cache contract as llama.py (described in kv_cache.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadCheckpoint, DoesNotFit, Unsupported
from .checkpoint import build, read_config
from .kv_cache import KVCache, Step, attend, default_positions, make_step

ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}


@dataclass(frozen=True)
class GPT2Config:
    vocab_size: int = 50257
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    hidden_dim: int = 3072
    max_seq_len: int = 1024
    norm_eps: float = 1e-5
    gelu_approximate: str = "tanh"  # torch's F.gelu(approximate=...): "tanh" (gelu_new) or "none"

    @classmethod
    def from_hf(cls, config: dict) -> "GPT2Config":
        if config.get("model_type") != "gpt2":
            raise Unsupported(f"model_type {config.get('model_type')!r} is not gpt2")
        for arch in config.get("architectures") or []:
            if arch not in ("GPT2LMHeadModel", "GPT2Model"):
                raise Unsupported(f"architecture {arch!r} (supported: GPT2LMHeadModel)")
        act = config.get("activation_function", "gelu_new")
        if act not in ACTIVATIONS:
            raise Unsupported(f"activation_function {act!r} in a gpt2 model")
        if not config.get("tie_word_embeddings", True):
            raise Unsupported("gpt2 with an untied lm_head (tie_word_embeddings=false)")
        if config.get("scale_attn_by_inverse_layer_idx") or not config.get("scale_attn_weights", True):
            raise Unsupported("gpt2 without the standard 1/sqrt(head_dim) attention scale")
        dim = config.get("n_embd", 768)
        return cls(vocab_size=config.get("vocab_size", 50257), dim=dim, n_layers=config.get("n_layer", 12),
                   n_heads=config.get("n_head", 12), hidden_dim=config.get("n_inner") or 4 * dim,
                   max_seq_len=config.get("n_positions", 1024), norm_eps=config.get("layer_norm_epsilon", 1e-5),
                   gelu_approximate=ACTIVATIONS[act])


class Attention(nn.Module):
    def __init__(self, c: GPT2Config):
        super().__init__()
        self.n_heads, self.head_dim = c.n_heads, c.dim // c.n_heads
        self.wqkv = nn.Linear(c.dim, 3 * c.dim)
        self.wo = nn.Linear(c.dim, c.dim)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, step: Step) -> Tensor:
        B, T, D = x.shape
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in self.wqkv(x).split(D, -1))
        y = attend(q, k, v, step, self.kv_cache)
        return self.wo(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, c: GPT2Config):
        super().__init__()
        self.attention_norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.attention = Attention(c)
        self.ffn_norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.w1 = nn.Linear(c.dim, c.hidden_dim)
        self.w2 = nn.Linear(c.hidden_dim, c.dim)
        self.gelu_approximate = c.gelu_approximate

    def forward(self, x: Tensor, step: Step) -> Tensor:
        h = x + self.attention(self.attention_norm(x), step)
        return h + self.w2(F.gelu(self.w1(self.ffn_norm(h)), approximate=self.gelu_approximate))


class GPT2(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embeddings = nn.Embedding(config.max_seq_len, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(config.dim, eps=config.norm_eps)

    def setup_cache(self, n_slots: int, max_seq_len: int, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> None:
        """Give every layer a static KV cache of n_slots sequences of up to max_seq_len tokens."""
        c, p = self.config, self.tok_embeddings.weight
        if max_seq_len > c.max_seq_len:
            raise DoesNotFit(f"a cache of {max_seq_len} positions: GPT-2 has {c.max_seq_len} learned positions")
        for layer in self.layers:
            layer.attention.kv_cache = KVCache(n_slots, c.n_heads, max_seq_len, c.dim // c.n_heads,
                                               dtype or p.dtype, device or p.device)

    def drop_cache(self) -> None:
        for layer in self.layers:
            layer.attention.kv_cache = None

    def hidden_states(self, tokens: Tensor, input_pos: Tensor | None = None, slots: Tensor | None = None) -> Tensor:
        if input_pos is None:
            input_pos = default_positions(tokens)
        step = make_step(input_pos, slots, self.layers[0].attention.kv_cache)
        x = self.tok_embeddings(tokens) + self.pos_embeddings(input_pos.clamp(min=0))
        for layer in self.layers:
            x = layer(x, step)
        return self.norm(x)

    def logits(self, h: Tensor) -> Tensor:
        return F.linear(h, self.tok_embeddings.weight)

    def forward(self, tokens: Tensor, input_pos: Tensor | None = None, slots: Tensor | None = None) -> Tensor:
        """Logits [B, T, vocab_size] of tokens [B, T] at positions input_pos [B, T] (-1: padding)."""
        return self.logits(self.hidden_states(tokens, input_pos, slots))


_HF_LAYER_NAMES = {"ln_1": "attention_norm", "attn.c_attn": "attention.wqkv", "attn.c_proj": "attention.wo",
                   "ln_2": "ffn_norm", "mlp.c_fc": "w1", "mlp.c_proj": "w2"}
_CONV1D = {"attention.wqkv", "attention.wo", "w1", "w2"}  # HF Conv1D stores [in, out]: transpose
_HF_NAMES = {"wte.weight": "tok_embeddings.weight", "wpe.weight": "pos_embeddings.weight",
             "ln_f.weight": "norm.weight", "ln_f.bias": "norm.bias"}
_HF_LAYER = re.compile(r"h\.(\d+)\.(.+)\.(weight|bias)")


def from_hf_state_dict(state_dict: dict) -> dict:
    """Rename a Hugging Face GPT-2 state dict to ours; Conv1D weights transposed; tied lm_head dropped."""
    out = {}
    for name, t in state_dict.items():
        if name == "lm_head.weight":
            continue
        name = name.removeprefix("transformer.")
        m = _HF_LAYER.fullmatch(name)
        if name.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers of old checkpoints
            continue
        if m and m.group(2) in _HF_LAYER_NAMES:
            ours = _HF_LAYER_NAMES[m.group(2)]
            if ours in _CONV1D and m.group(3) == "weight":
                t = t.t().contiguous()
            out[f"layers.{m.group(1)}.{ours}.{m.group(3)}"] = t
        elif name in _HF_NAMES:
            out[_HF_NAMES[name]] = t
        else:
            raise BadCheckpoint(f"unexpected tensor {name!r} in a GPT-2 checkpoint")
    return out


def load_gpt2(path: str | Path, dtype: torch.dtype | None = None,
              device: torch.device | str = "cpu") -> tuple[GPT2, GPT2Config]:
    """A GPT-2 model from a Hugging Face folder (config.json + safetensors)."""
    from ..formats.safetensors import load_state_dict

    config = GPT2Config.from_hf(read_config(path))
    return build(GPT2, config, from_hf_state_dict(load_state_dict(path)), dtype, device, where=str(path)), config
