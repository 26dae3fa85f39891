"""BERT encoder (post-LN) for sentence embeddings (all-MiniLM-L6-v2 style); HF / sentence-transformers loader."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadCheckpoint, Unsupported
from .checkpoint import build, read_config

ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    hidden_dim: int = 3072
    max_seq_len: int = 512
    type_vocab_size: int = 2
    norm_eps: float = 1e-12
    gelu_approximate: str = "none"  # torch's F.gelu(approximate=...)

    @classmethod
    def from_hf(cls, config: dict) -> "BertConfig":
        if config.get("model_type") != "bert":
            raise Unsupported(f"model_type {config.get('model_type')!r} is not bert")
        act = config.get("hidden_act", "gelu")
        if act not in ACTIVATIONS:
            raise Unsupported(f"hidden_act {act!r} in a bert model")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise Unsupported(f"position_embedding_type {config['position_embedding_type']!r} in a bert model")
        return cls(vocab_size=config["vocab_size"], dim=config["hidden_size"],
                   n_layers=config["num_hidden_layers"], n_heads=config["num_attention_heads"],
                   hidden_dim=config["intermediate_size"], max_seq_len=config.get("max_position_embeddings", 512),
                   type_vocab_size=config.get("type_vocab_size", 2), norm_eps=config.get("layer_norm_eps", 1e-12),
                   gelu_approximate=ACTIVATIONS[act])


class Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.n_heads, self.head_dim = c.n_heads, c.dim // c.n_heads
        self.wq, self.wk, self.wv = nn.Linear(c.dim, c.dim), nn.Linear(c.dim, c.dim), nn.Linear(c.dim, c.dim)
        self.wo = nn.Linear(c.dim, c.dim)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, T, D = x.shape
        q, k, v = (w(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = Attention(c)
        self.attention_norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.w1 = nn.Linear(c.dim, c.hidden_dim)
        self.w2 = nn.Linear(c.hidden_dim, c.dim)
        self.ffn_norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.gelu_approximate = c.gelu_approximate

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.attention_norm(x + self.attention(x, mask))
        return self.ffn_norm(h + self.w2(F.gelu(self.w1(h), approximate=self.gelu_approximate)))


class Bert(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.pos_embeddings = nn.Embedding(config.max_seq_len, config.dim)
        self.type_embeddings = nn.Embedding(config.type_vocab_size, config.dim)
        self.embed_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """Last hidden state [B, T, dim]; attention_mask [B, T] is 1 for tokens, 0 for padding."""
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(T, device=input_ids.device)
        x = self.tok_embeddings(input_ids) + self.type_embeddings(token_type_ids) + self.pos_embeddings(positions)
        x = self.embed_norm(x)
        keys = attention_mask.bool()
        keys = keys | ~keys.any(-1, keepdim=True)  # an all-padding row sees everything: finite, never NaN
        mask = keys[:, None, None, :]               # [B, 1, 1, T]: every query sees the non-pad keys
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def embed(self, input_ids: Tensor, attention_mask: Tensor | None = None,
              token_type_ids: Tensor | None = None, normalize: bool = True) -> Tensor:
        """Sentence embeddings [B, dim]: the mean of the non-pad tokens' last hidden states, L2-normalised."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        h = self(input_ids, attention_mask, token_type_ids)
        m = attention_mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=-1) if normalize else pooled


_HF_LAYER_NAMES = {
    "attention.self.query": "attention.wq", "attention.self.key": "attention.wk",
    "attention.self.value": "attention.wv", "attention.output.dense": "attention.wo",
    "attention.output.LayerNorm": "attention_norm", "intermediate.dense": "w1",
    "output.dense": "w2", "output.LayerNorm": "ffn_norm",
}
_HF_NAMES = {"embeddings.word_embeddings": "tok_embeddings", "embeddings.position_embeddings": "pos_embeddings",
             "embeddings.token_type_embeddings": "type_embeddings", "embeddings.LayerNorm": "embed_norm"}
_HF_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)")
_OLD_NORM_NAMES = {"gamma": "weight", "beta": "bias"}  # LayerNorm names of TF-converted checkpoints


def from_hf_state_dict(state_dict: dict) -> dict:
    """Rename a Hugging Face / sentence-transformers BERT state dict (with or without "bert.") to ours."""
    out = {}
    for name, t in state_dict.items():
        name = name.removeprefix("bert.")
        if name.startswith(("pooler.", "cls.")) or name == "embeddings.position_ids":  # heads and buffers we skip
            continue
        base, _, leaf = name.rpartition(".")
        leaf = _OLD_NORM_NAMES.get(leaf, leaf) if base.endswith("LayerNorm") else leaf
        name = f"{base}.{leaf}"
        m = _HF_LAYER.fullmatch(name)
        if m and m.group(2) in _HF_LAYER_NAMES:
            out[f"layers.{m.group(1)}.{_HF_LAYER_NAMES[m.group(2)]}.{m.group(3)}"] = t
        elif base in _HF_NAMES and leaf in ("weight", "bias"):
            out[f"{_HF_NAMES[base]}.{leaf}"] = t
        else:
            raise BadCheckpoint(f"unexpected tensor {name!r} in a BERT checkpoint")
    return out


def load_bert(path: str | Path, dtype: torch.dtype | None = None,
              device: torch.device | str = "cpu") -> tuple[Bert, BertConfig]:
    """A BERT encoder from a Hugging Face or sentence-transformers folder (config.json + safetensors)."""
    from ..formats.safetensors import load_state_dict

    config = BertConfig.from_hf(read_config(path))
    return build(Bert, config, from_hf_state_dict(load_state_dict(path)), dtype, device, where=str(path)), config
