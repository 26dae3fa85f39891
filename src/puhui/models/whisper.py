"""Whisper: a conv-stem audio encoder and a text decoder with cross-attention; HF and CTranslate2 loaders.

Encoder: two 1-D convolutions (the second with stride 2) with GELU over the log-mel frames, sinusoidal
positions, pre-LayerNorm blocks, a final LayerNorm. Decoder: token embeddings + learned positions,
pre-LayerNorm blocks of causal self-attention, cross-attention to the audio and a GELU MLP, a final
LayerNorm, logits through the (tied) token embeddings. Keys carry no bias (a key bias only shifts every
score of a query by the same amount, which the softmax removes; CTranslate2 stores zeros for it).

Decoding (whisper_decode.py) uses a `DecoderCache`: self-attention keys/values grow by the tokens of
each call, the cross-attention ones are computed from the audio once.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadCheckpoint, BadInput, DoesNotFit, Unsupported
from .checkpoint import build, read_config


@dataclass(frozen=True)
class WhisperConfig:
    vocab_size: int = 51865
    n_mels: int = 80
    dim: int = 384
    n_audio_ctx: int = 1500        # encoder positions: 30 s of 3,000 mel frames, halved by conv2
    n_text_ctx: int = 448          # decoder positions
    encoder_layers: int = 4
    encoder_heads: int = 6
    encoder_ffn_dim: int = 1536
    decoder_layers: int = 4
    decoder_heads: int = 6
    decoder_ffn_dim: int = 1536
    suppress_tokens: tuple[int, ...] = ()               # never generated
    begin_suppress_tokens: tuple[int, ...] = (220, 50256)  # not as the first generated token

    @property
    def is_multilingual(self) -> bool:
        return self.vocab_size >= 51865  # the English-only models have 51,864 tokens

    @classmethod
    def from_hf(cls, config: dict, generation_config: dict | None = None) -> "WhisperConfig":
        if config.get("model_type") != "whisper":
            raise Unsupported(f"model_type {config.get('model_type')!r} is not whisper")
        if config.get("activation_function", "gelu") != "gelu":
            raise Unsupported(f"activation_function {config['activation_function']!r} in a whisper model")
        if config.get("scale_embedding"):
            raise Unsupported("whisper with scale_embedding=true")
        if config.get("d_model", 0) % config.get("encoder_attention_heads", 1) or \
                config.get("d_model", 0) % config.get("decoder_attention_heads", 1):
            raise BadCheckpoint("whisper config: d_model is not a multiple of the number of heads")
        gen = {**config, **(generation_config or {})}
        try:
            return cls(vocab_size=config["vocab_size"], n_mels=config.get("num_mel_bins", 80),
                       dim=config["d_model"], n_audio_ctx=config.get("max_source_positions", 1500),
                       n_text_ctx=config.get("max_target_positions", 448),
                       encoder_layers=config["encoder_layers"], encoder_heads=config["encoder_attention_heads"],
                       encoder_ffn_dim=config["encoder_ffn_dim"], decoder_layers=config["decoder_layers"],
                       decoder_heads=config["decoder_attention_heads"], decoder_ffn_dim=config["decoder_ffn_dim"],
                       suppress_tokens=tuple(gen.get("suppress_tokens") or ()),
                       begin_suppress_tokens=tuple(gen.get("begin_suppress_tokens") or ()))
        except KeyError as e:
            raise BadCheckpoint(f"whisper config.json lacks {e}") from None


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.wq, self.wk = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False)
        self.wv, self.wo = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def heads(self, x: Tensor) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

    def keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        return self.heads(self.wk(source)), self.heads(self.wv(source))

    def forward(self, x: Tensor, kv: tuple[Tensor, Tensor] | None = None, mask: Tensor | None = None,
                causal: bool = False) -> Tensor:
        """x [B, T, dim] attends to kv (keys and values [B, H, S, head_dim]), by default to itself."""
        q = self.heads(self.wq(x))
        k, v = kv if kv is not None else self.keys_values(x)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
        B, T, D = x.shape
        return self.wo(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1, self.w2 = nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.gelu(self.w1(x)))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, hidden_dim: int):
        super().__init__()
        self.attention_norm, self.attention = nn.LayerNorm(dim), Attention(dim, n_heads)
        self.ffn_norm, self.mlp = nn.LayerNorm(dim), MLP(dim, hidden_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.ffn_norm(x))


def sinusoids(length: int, dim: int, max_timescale: float = 10000.0) -> Tensor:
    """Whisper's encoder positions: [length, dim], sines in the first half of the channels, cosines in the second."""
    inv = torch.exp(-math.log(max_timescale) / (dim // 2 - 1) * torch.arange(dim // 2, dtype=torch.float32))
    t = torch.arange(length, dtype=torch.float32)[:, None] * inv[None, :]
    return torch.cat([t.sin(), t.cos()], dim=1)


class Encoder(nn.Module):
    def __init__(self, c: WhisperConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(c.n_mels, c.dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(c.dim, c.dim, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", sinusoids(c.n_audio_ctx, c.dim))  # the checkpoint's own values load over it
        self.layers = nn.ModuleList(EncoderBlock(c.dim, c.encoder_heads, c.encoder_ffn_dim)
                                    for _ in range(c.encoder_layers))
        self.norm = nn.LayerNorm(c.dim)

    def forward(self, mel: Tensor) -> Tensor:
        """Audio features [B, frames // 2, dim] of log-mel frames [B, n_mels, frames] (3,000 for 30 s)."""
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        if x.shape[1] > self.positions.shape[0]:
            raise BadInput(f"{mel.shape[-1]} mel frames is more than the {2 * self.positions.shape[0]} "
                           f"(30 s) the encoder takes")
        x = x + self.positions[:x.shape[1]].to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class DecoderCache:
    """Decoder keys/values for a batch: self-attention ones per position, cross-attention ones of the audio."""

    def __init__(self, c: WhisperConfig, batch: int, dtype: torch.dtype, device: torch.device | str):
        shape = (c.decoder_layers, batch, c.decoder_heads, c.n_text_ctx, c.dim // c.decoder_heads)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.cross: list[tuple[Tensor, Tensor] | None] = [None] * c.decoder_layers

    def update(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v [B, H, T, head_dim] at positions start..start+T-1; return positions 0..start+T-1."""
        end = start + k.shape[2]
        self.k[layer, :, :, start:end], self.v[layer, :, :, start:end] = k, v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, hidden_dim: int):
        super().__init__()
        self.attention_norm, self.attention = nn.LayerNorm(dim), Attention(dim, n_heads)
        self.cross_attention_norm, self.cross_attention = nn.LayerNorm(dim), Attention(dim, n_heads)
        self.ffn_norm, self.mlp = nn.LayerNorm(dim), MLP(dim, hidden_dim)

    def forward(self, x: Tensor, audio: Tensor, start: int, mask: Tensor | None,
                cache: DecoderCache | None, index: int) -> Tensor:
        h = self.attention_norm(x)
        if cache is None:
            x = x + self.attention(h, causal=True)
            cross = self.cross_attention.keys_values(audio)
        else:
            x = x + self.attention(h, kv=cache.update(index, start, *self.attention.keys_values(h)), mask=mask)
            if cache.cross[index] is None:
                cache.cross[index] = self.cross_attention.keys_values(audio)
            cross = cache.cross[index]
        x = x + self.cross_attention(self.cross_attention_norm(x), kv=cross)
        return x + self.mlp(self.ffn_norm(x))


class Decoder(nn.Module):
    def __init__(self, c: WhisperConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.pos_embeddings = nn.Parameter(torch.zeros(c.n_text_ctx, c.dim))
        self.layers = nn.ModuleList(DecoderBlock(c.dim, c.decoder_heads, c.decoder_ffn_dim)
                                    for _ in range(c.decoder_layers))
        self.norm = nn.LayerNorm(c.dim)

    def forward(self, tokens: Tensor, audio: Tensor, start: int = 0, cache: DecoderCache | None = None) -> Tensor:
        """Logits [B, T, vocab] of tokens [B, T] at positions start..start+T-1 (start > 0 needs the cache)."""
        T = tokens.shape[1]
        if start + T > self.pos_embeddings.shape[0]:
            raise DoesNotFit(f"{start + T} tokens is more than the decoder's {self.pos_embeddings.shape[0]} positions")
        if start > 0 and cache is None:
            raise BadInput("decoding from a position past 0 needs a DecoderCache")
        x = self.tok_embeddings(tokens) + self.pos_embeddings[start:start + T]
        mask = None
        if cache is not None and T > 1:  # queries start..start+T-1 see keys 0..their own position
            keys, queries = torch.arange(start + T, device=x.device), torch.arange(start, start + T, device=x.device)
            mask = keys[None, :] <= queries[:, None]
        for i, layer in enumerate(self.layers):
            x = layer(x, audio, start, mask, cache, i)
        return F.linear(self.norm(x), self.tok_embeddings.weight)


class Whisper(nn.Module):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def forward(self, mel: Tensor, tokens: Tensor) -> Tensor:
        """Logits [B, T, vocab] of the tokens [B, T] given the audio's log-mel frames [B, n_mels, frames]."""
        return self.decoder(tokens, self.encoder(mel))

    def new_cache(self, batch: int) -> DecoderCache:
        w = self.decoder.tok_embeddings.weight
        return DecoderCache(self.config, batch, w.dtype, w.device)


# ---- Hugging Face checkpoints (WhisperForConditionalGeneration / WhisperModel) ----

_HF_BLOCK = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
             "self_attn.out_proj": "attention.wo", "self_attn_layer_norm": "attention_norm",
             "encoder_attn.q_proj": "cross_attention.wq", "encoder_attn.k_proj": "cross_attention.wk",
             "encoder_attn.v_proj": "cross_attention.wv", "encoder_attn.out_proj": "cross_attention.wo",
             "encoder_attn_layer_norm": "cross_attention_norm", "fc1": "mlp.w1", "fc2": "mlp.w2",
             "final_layer_norm": "ffn_norm"}
_HF_TOP = {"encoder.conv1.weight": "encoder.conv1.weight", "encoder.conv1.bias": "encoder.conv1.bias",
           "encoder.conv2.weight": "encoder.conv2.weight", "encoder.conv2.bias": "encoder.conv2.bias",
           "encoder.embed_positions.weight": "encoder.positions",
           "encoder.layer_norm.weight": "encoder.norm.weight", "encoder.layer_norm.bias": "encoder.norm.bias",
           "decoder.embed_tokens.weight": "decoder.tok_embeddings.weight",
           "decoder.embed_positions.weight": "decoder.pos_embeddings",
           "decoder.layer_norm.weight": "decoder.norm.weight", "decoder.layer_norm.bias": "decoder.norm.bias"}
_HF_LAYER = re.compile(r"(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)")


def from_hf_state_dict(state_dict: dict) -> dict:
    """Rename a transformers Whisper state dict to ours (the output projection must be the tied embeddings)."""
    out, proj = {}, None
    for name, t in state_dict.items():
        name = name.removeprefix("model.")
        if name == "proj_out.weight":
            proj = t
            continue
        m = _HF_LAYER.fullmatch(name)
        if m and m.group(3) in _HF_BLOCK:
            out[f"{m.group(1)}.layers.{m.group(2)}.{_HF_BLOCK[m.group(3)]}.{m.group(4)}"] = t
        elif name in _HF_TOP:
            out[_HF_TOP[name]] = t
        else:
            raise BadCheckpoint(f"unexpected tensor {name!r} in a Whisper checkpoint")
    emb = out.get("decoder.tok_embeddings.weight")
    if proj is not None and emb is not None and not torch.equal(proj, emb):
        raise Unsupported("whisper with an output projection that is not the token embeddings")
    return out


# ---- CTranslate2 checkpoints (WhisperSpec, as faster-whisper uses) ----

_CT2_SCALARS = {"decoder/activation": 3, "decoder/pre_norm": 1}  # GELU, pre-norm; other flags (alibi ...) are 0
_CT2_IGNORED = {"decoder/alignment_heads", "decoder/alignment_layer", "decoder/num_heads", "encoder/num_heads"}
_CT2_NORM = {"gamma": "weight", "beta": "bias"}
_CT2_LAYER = re.compile(r"(encoder|decoder)/layer_(\d+)/(self_attention|attention|ffn)/(\w+)/(\w+)")


def _ct2_layer(side: str, i: str, part: str, module: str, leaf: str, t: Tensor, out: dict, where: str) -> None:
    prefix = f"{side}.layers.{i}."
    if module == "layer_norm":
        norms = {"self_attention": "attention_norm", "attention": "cross_attention_norm", "ffn": "ffn_norm"}
        out[prefix + f"{norms[part]}.{_CT2_NORM[leaf]}"] = t
        return
    names = {("self_attention", "linear_0"): ("attention.wq", "attention.wk", "attention.wv"),
             ("self_attention", "linear_1"): ("attention.wo",),
             ("attention", "linear_0"): ("cross_attention.wq",),
             ("attention", "linear_1"): ("cross_attention.wk", "cross_attention.wv"),
             ("attention", "linear_2"): ("cross_attention.wo",),
             ("ffn", "linear_0"): ("mlp.w1",), ("ffn", "linear_1"): ("mlp.w2",)}.get((part, module))
    if names is None or leaf not in ("weight", "bias") or t.shape[0] % len(names):
        raise BadCheckpoint(f"{where}: unexpected variable {side}/layer_{i}/{part}/{module}/{leaf} "
                            f"of shape {tuple(t.shape)} in a Whisper model")
    for name, chunk in zip(names, t.chunk(len(names), dim=0)):  # fused q|k|v and k|v
        if not (leaf == "bias" and name.endswith(".wk")):      # the key bias (zeros) is dropped
            out[prefix + f"{name}.{leaf}"] = chunk


def from_ct2_variables(variables: dict, where: str = "model.bin") -> dict:
    """Our state dict from the (dequantised) variables of a CTranslate2 WhisperSpec model."""
    out = {}
    for name, a in variables.items():
        if name in _CT2_IGNORED or name == "decoder/projection/weight":
            continue
        if np.ndim(a) == 0:  # a flag of the spec: the known ones must have Whisper's values, others be off
            if int(a) != _CT2_SCALARS.get(name, 0):
                raise Unsupported(f"{where}: {name} = {int(a)}, a Whisper model has {_CT2_SCALARS.get(name, 0)}")
            continue
        t = torch.from_numpy(np.asarray(a))
        m = _CT2_LAYER.fullmatch(name)
        if m:
            _ct2_layer(*m.groups(), t, out, where)
        elif m := re.fullmatch(r"(encoder|decoder)/layer_norm/(gamma|beta)", name):
            out[f"{m.group(1)}.norm.{_CT2_NORM[m.group(2)]}"] = t
        elif m := re.fullmatch(r"encoder/(conv[12])/(weight|bias)", name):
            out[f"encoder.{m.group(1)}.{m.group(2)}"] = t
        elif name == "encoder/position_encodings/encodings":
            out["encoder.positions"] = t
        elif name == "decoder/position_encodings/encodings":
            out["decoder.pos_embeddings"] = t
        elif name == "decoder/embeddings/weight":
            out["decoder.tok_embeddings.weight"] = t
        else:
            raise BadCheckpoint(f"{where}: unexpected variable {name!r} in a Whisper model")
    proj = variables.get("decoder/projection/weight")
    emb = variables.get("decoder/embeddings/weight")
    if proj is not None and emb is not None and proj is not emb and not np.array_equal(proj, emb):
        raise Unsupported(f"{where}: whisper with an output projection that is not the token embeddings")
    if np.any(np.asarray(variables.get("decoder/projection/bias", 0))):
        raise Unsupported(f"{where}: whisper with an output projection bias")
    return out


def config_from_ct2(variables: dict, config: dict, where: str = "model.bin") -> WhisperConfig:
    """The WhisperConfig of a CTranslate2 model: sizes from the variables' shapes, token lists from config.json."""
    try:
        vocab, dim = variables["decoder/embeddings/weight"].shape
        n_mels = variables["encoder/conv1/weight"].shape[1]
        layers = {side: len({m.group(1) for k in variables if (m := re.match(rf"{side}/layer_(\d+)/", k))})
                  for side in ("encoder", "decoder")}
        return WhisperConfig(vocab_size=vocab, n_mels=n_mels, dim=dim,
                             n_audio_ctx=variables["encoder/position_encodings/encodings"].shape[0],
                             n_text_ctx=variables["decoder/position_encodings/encodings"].shape[0],
                             encoder_layers=layers["encoder"], encoder_heads=int(variables["encoder/num_heads"]),
                             encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
                             decoder_layers=layers["decoder"], decoder_heads=int(variables["decoder/num_heads"]),
                             decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
                             suppress_tokens=tuple(config.get("suppress_ids") or ()),
                             begin_suppress_tokens=tuple(config.get("suppress_ids_begin") or ()))
    except (KeyError, ValueError, TypeError) as e:
        raise BadCheckpoint(f"{where}: not a complete Whisper model ({type(e).__name__}: {e})") from None


def load_whisper(path: str | Path, dtype: torch.dtype | None = None,
                 device: torch.device | str = "cpu") -> tuple[Whisper, WhisperConfig]:
    """Whisper from a CTranslate2 folder (model.bin + config.json) or a Hugging Face one (config.json + safetensors).

    dtype None keeps a Hugging Face checkpoint's dtype and gives float32 for CTranslate2 (whose float16
    or int8 weights are a storage format there).
    """
    path = Path(path)
    if (path / "model.bin").is_file():
        from ..formats.ctranslate2 import load_ctranslate2

        ct2 = load_ctranslate2(path)
        where = str(path / "model.bin")
        if ct2.spec != "WhisperSpec":
            raise Unsupported(f"{where}: a CTranslate2 {ct2.spec or 'model'}, not a WhisperSpec")
        config = config_from_ct2(ct2.variables, ct2.config, where)
        state_dict = from_ct2_variables(ct2.variables, where)
        return build(Whisper, config, state_dict, dtype or torch.float32, device, where=where), config
    from ..formats.safetensors import load_state_dict

    generation = path / "generation_config.json"
    try:
        gen = json.loads(generation.read_text()) if generation.is_file() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadCheckpoint(f"{generation}: not JSON ({e})") from None
    config = WhisperConfig.from_hf(read_config(path), gen if isinstance(gen, dict) else None)
    return build(Whisper, config, from_hf_state_dict(load_state_dict(path)), dtype, device, where=str(path)), config


def load_whisper_tokenizer(path: str | Path):
    """The `tokenizers.Tokenizer` of a Whisper folder's tokenizer.json."""
    from tokenizers import Tokenizer

    file = Path(path) / "tokenizer.json"
    if not file.is_file():
        raise BadInput(f"{path}: no tokenizer.json next to the Whisper model")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as e:  # tokenizers raises a bare Exception for a bad file
        raise BadCheckpoint(f"{file}: not a tokenizer ({e})") from None
