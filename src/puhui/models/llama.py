"""One decoder for Llama, Mistral, Qwen2 and SmolLM: GQA, RoPE, RMSNorm, SwiGLU; HF checkpoint loader.

RoPE uses the Hugging Face layout (rotate_half over the two halves of each head), so HF q/k weights load
as they are; GGUF q/k weights (interleaved pairs) must be un-permuted to this layout by their loader.
The forward/cache contract is described in kv_cache.py.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadCheckpoint, Unsupported
from .checkpoint import build, read_config
from .kv_cache import KVCache, Step, attend, default_positions, make_step

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
ROPE_SCALINGS = ("llama3",)


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int                    # the MLP's inner width
    head_dim: int | None = None        # None: dim // n_heads
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None   # None or {"rope_type": "llama3", "factor", "low_freq_factor",
    #                                    "high_freq_factor", "original_max_position_embeddings"}
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    qkv_bias: bool = False             # Qwen2; Llama's attention_bias sets qkv_bias and out_bias
    out_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None  # Mistral: a query at p sees keys p-W+1..p

    def __post_init__(self):
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise Unsupported(f"{self.n_heads} attention heads are not a multiple of {self.n_kv_heads} kv heads")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in ROPE_SCALINGS:
                raise Unsupported(f"rope_scaling type {kind!r} (supported: {', '.join(ROPE_SCALINGS)})")

    @classmethod
    def from_hf(cls, config: dict) -> "LlamaConfig":
        """From a Hugging Face config.json dict (model_type llama, mistral or qwen2)."""
        model_type = config.get("model_type")
        if model_type not in ARCHITECTURES:
            raise Unsupported(f"model_type {model_type!r} is not a Llama-family decoder "
                              f"(supported: {', '.join(ARCHITECTURES)})")
        for arch in config.get("architectures") or []:
            if arch not in ARCHITECTURES.values():
                raise Unsupported(f"architecture {arch!r} (supported: {', '.join(ARCHITECTURES.values())})")
        if config.get("hidden_act", "silu") != "silu":
            raise Unsupported(f"hidden_act {config['hidden_act']!r} in a {model_type} model (only silu)")
        # transformers 5 writes rope_parameters {"rope_type", "rope_theta", ...}; older files rope_theta + rope_scaling
        rope = dict(config.get("rope_scaling") or config.get("rope_parameters") or {})
        rope_theta = rope.pop("rope_theta", None) or config.get("rope_theta", 10000.0)
        if rope.get("rope_type", rope.get("type", "default")) == "default":
            rope = None
        sliding_window = None
        if model_type == "mistral":
            sliding_window = config.get("sliding_window")
        elif config.get("use_sliding_window") or "sliding_attention" in (config.get("layer_types") or []):
            raise Unsupported(f"{model_type} with per-layer sliding windows (use_sliding_window / layer_types)")
        attention_bias = bool(config.get("attention_bias", False))
        return cls(
            vocab_size=config["vocab_size"],
            dim=config["hidden_size"],
            n_layers=config["num_hidden_layers"],
            n_heads=config["num_attention_heads"],
            n_kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
            hidden_dim=config["intermediate_size"],
            head_dim=config.get("head_dim"),
            norm_eps=config.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_scaling=rope,
            max_seq_len=config.get("max_position_embeddings", 2048),
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or attention_bias,
            out_bias=attention_bias,
            mlp_bias=bool(config.get("mlp_bias", False)),
            sliding_window=sliding_window,
        )


def rope_inv_freq(config: LlamaConfig) -> Tensor:
    """RoPE inverse frequencies [head_dim / 2], float32, with Llama-3 scaling when configured."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device="cpu").float() / d))
    if config.rope_scaling is None:
        return inv_freq
    s = config.rope_scaling
    factor, low, high = s["factor"], s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


def rope_tables(input_pos: Tensor, inv_freq: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and signed sin [B, T, 1, head_dim] of positions [B, T] (-1 pads as 0) for apply_rope."""
    freqs = input_pos.clamp(min=0)[..., None].float() * inv_freq                  # [B, T, head_dim / 2]
    cos, sin = freqs.cos(), freqs.sin()
    return torch.cat((cos, cos), -1)[:, :, None].to(dtype), torch.cat((-sin, sin), -1)[:, :, None].to(dtype)


def apply_rope(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """HF's x * cos + rotate_half(x) * sin, with rotate_half(x) * sin = roll(x, half) * (-sin, sin)."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class Attention(nn.Module):
    """q, k and v come from one fused matrix `wqkv` (rows: the q heads, then the k heads, then the v heads)."""

    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = c.n_heads, c.n_kv_heads, c.head_dim
        self.wqkv = nn.Linear(c.dim, (c.n_heads + 2 * c.n_kv_heads) * c.head_dim, bias=c.qkv_bias)
        self.wo = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=c.out_bias)
        self.kv_cache: KVCache | None = None

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, step: Step) -> Tensor:
        B, T, _ = x.shape
        H, H_kv = self.n_heads, self.n_kv_heads
        qkv = self.wqkv(x).view(B, T, H + 2 * H_kv, self.head_dim)
        qk = apply_rope(qkv[:, :, :H + H_kv], cos, sin)                    # q and k rotated together
        q, k, v = qk[:, :, :H].transpose(1, 2), qk[:, :, H:].transpose(1, 2), qkv[:, :, H + H_kv:].transpose(1, 2)
        y = attend(q, k, v, step, self.kv_cache)
        return self.wo(y.transpose(1, 2).reshape(B, T, H * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU with the gate and up matrices fused in `w13` (gate rows first)."""

    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.hidden_dim = c.hidden_dim
        self.w13 = nn.Linear(c.dim, 2 * c.hidden_dim, bias=c.mlp_bias)
        self.w2 = nn.Linear(c.hidden_dim, c.dim, bias=c.mlp_bias)  # down

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w13(x).split(self.hidden_dim, -1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, c: LlamaConfig):
        super().__init__()
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.attention = Attention(c)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.feed_forward = FeedForward(c)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, step: Step) -> Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, step)
        return h + self.feed_forward(self.ffn_norm(h))


class Llama(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = None if config.tie_embeddings else nn.Linear(config.dim, config.vocab_size, bias=False)
        self.inv_freq = rope_inv_freq(config)  # float32 whatever the model's dtype: not a buffer

    def setup_cache(self, n_slots: int, max_seq_len: int, dtype: torch.dtype | None = None,
                    device: torch.device | str | None = None) -> None:
        """Give every layer a static KV cache of n_slots sequences of up to max_seq_len tokens."""
        p = self.tok_embeddings.weight
        c = self.config
        for layer in self.layers:
            layer.attention.kv_cache = KVCache(n_slots, c.n_kv_heads, max_seq_len, c.head_dim,
                                               dtype or p.dtype, device or p.device)

    def drop_cache(self) -> None:
        for layer in self.layers:
            layer.attention.kv_cache = None

    def hidden_states(self, tokens: Tensor, input_pos: Tensor | None = None, slots: Tensor | None = None) -> Tensor:
        """The final-norm hidden states [B, T, dim]; see kv_cache.py for input_pos and slots."""
        if input_pos is None:
            input_pos = default_positions(tokens)
        step = make_step(input_pos, slots, self.layers[0].attention.kv_cache, self.config.sliding_window)
        if self.inv_freq.device != tokens.device:
            self.inv_freq = self.inv_freq.to(tokens.device)
        x = self.tok_embeddings(tokens)
        cos, sin = rope_tables(input_pos, self.inv_freq, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, step)
        return self.norm(x)

    def logits(self, h: Tensor) -> Tensor:
        return F.linear(h, self.tok_embeddings.weight if self.output is None else self.output.weight)

    def forward(self, tokens: Tensor, input_pos: Tensor | None = None, slots: Tensor | None = None) -> Tensor:
        """Logits [B, T, vocab_size] of tokens [B, T] at positions input_pos [B, T] (-1: padding)."""
        return self.logits(self.hidden_states(tokens, input_pos, slots))


_HF_LAYER_NAMES = {
    "self_attn.o_proj": "attention.wo", "mlp.down_proj": "feed_forward.w2",
    "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm",
}
# HF matrices that are stacked (in this order) into one of ours
_HF_FUSED = {"attention.wqkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
             "feed_forward.w13": ("mlp.gate_proj", "mlp.up_proj")}
_HF_PART = {part: (ours, i) for ours, parts in _HF_FUSED.items() for i, part in enumerate(parts)}
_HF_NAMES = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
             "lm_head.weight": "output.weight"}
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)")


def from_hf_state_dict(state_dict: dict, config: LlamaConfig) -> dict:
    """Rename a Hugging Face Llama/Mistral/Qwen2 state dict to ours: q/k/v and gate/up are stacked into
    wqkv and w13 (one copy of those matrices); every other tensor is kept as it is."""
    out, parts = {}, {}
    for name, t in state_dict.items():
        if name.endswith("rotary_emb.inv_freq") or (config.tie_embeddings and name == "lm_head.weight"):
            continue
        m = _HF_LAYER.fullmatch(name)
        if m and m.group(2) in _HF_LAYER_NAMES:
            out[f"layers.{m.group(1)}.{_HF_LAYER_NAMES[m.group(2)]}.{m.group(3)}"] = t
        elif m and m.group(2) in _HF_PART:
            ours, i = _HF_PART[m.group(2)]
            parts.setdefault(f"layers.{m.group(1)}.{ours}.{m.group(3)}", {})[i] = t
        elif name in _HF_NAMES:
            out[_HF_NAMES[name]] = t
        else:
            raise BadCheckpoint(f"unexpected tensor {name!r} in a Llama-family checkpoint")
    for ours, got in parts.items():
        layer, kind = ours.split(".")[1], ours.rsplit(".", 1)[1]
        names = _HF_FUSED[ours.split(".", 2)[2].rsplit(".", 1)[0]]
        missing = [f"model.layers.{layer}.{n}.{kind}" for i, n in enumerate(names) if i not in got]
        if missing:
            raise BadCheckpoint(f"missing tensor {missing[0]!r} in a Llama-family checkpoint")
        out[ours] = torch.cat([got[i] for i in range(len(names))])
    return out


def load_llama(path: str | Path, dtype: torch.dtype | None = None,
               device: torch.device | str = "cpu") -> tuple[Llama, LlamaConfig]:
    """A Llama/Mistral/Qwen2/SmolLM model from a Hugging Face folder (config.json + safetensors)."""
    from ..formats.safetensors import load_state_dict

    config = LlamaConfig.from_hf(read_config(path))
    state_dict = from_hf_state_dict(load_state_dict(path), config)
    return build(Llama, config, state_dict, dtype, device, where=str(path)), config
