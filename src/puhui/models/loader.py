"""From a store manifest (or a path) to a ready model: weights, tokenizer and chat template together.

A store model comes as the `Manifest` its caller read (tasks.load reads it once): its files are found through
it (`Manifest.path` for a GGUF file, `Manifest.folder` for a folder, every file of which is checked first with
`Manifest.verify`: a damaged one is ModelCorrupt naming it); a local file or folder path is loaded as it is.
Loading by name is `puhui.load(name)`'s job, not this module's. A file whose tensors are not the model's (a
garbled name or shape in its header) is BadCheckpoint saying the file is damaged and naming it.

- GGUF file (llama family): config from the metadata (formats.gguf.hf_config_llama -> LlamaConfig.from_hf),
  weights dequantised (to float32 unless a dtype is asked for), tokenizer and chat template from the metadata.
- Hugging Face folder: config.json + safetensors (models.load_text_model), tokenizer.json, and the chat
  template of tokenizer_config.json / chat_template.jinja.
- Sentence-embedding folder (sentence-transformers layout): a BERT encoder, its tokenizer, and the pooling,
  normalisation and max_seq_length the store parsed into the manifest's extra at import (store/describe.py
  `sentence_facts`; for a path, or a manifest written before those keys, the same function reads the folder).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import BadCheckpoint, BadInput, ModelNotFound, Unsupported
from .checkpoint import check_state_dict

# special tokens that end a chat turn, in the templates of the common model families
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>",
                      "<|end_of_text|>", "</s>", "<|return|>")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype) -> torch.dtype | None:
    """None, a torch.dtype, or a name ("float32", "bf16" ...)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() in DTYPES:
        return DTYPES[dtype.lower()]
    raise BadInput(f"dtype {dtype!r} (use one of: {', '.join(DTYPES)})")


def resolve_device(device=None) -> torch.device:
    """None: the settings' device; "auto": cuda when there is one."""
    if device is None:
        from ..settings import get_settings
        device = get_settings().device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


@dataclass
class TextModel:
    """A decoder and what generating with it needs."""

    model: nn.Module
    config: object                   # LlamaConfig or GPT2Config
    tokenizer: object                # text.tokenizer.Tokenizer
    chat_template: str | None
    eos_ids: frozenset[int]          # tokens that end any generation
    end_of_turn_ids: frozenset[int]  # eos_ids and the template's end-of-turn tokens: what ends a chat answer
    source: str                      # the file or folder it came from

    @property
    def context_length(self) -> int:
        return self.config.max_seq_len


def _weights_path(manifest_or_path) -> tuple[Path, str]:
    """(path, label): a path as it is; a Manifest's GGUF file, or its folder."""
    from ..store.manifest import Manifest

    if isinstance(manifest_or_path, Manifest):
        m = manifest_or_path
        if m.format == "gguf":
            return m.path(), m.name
        if m.folder is None:
            raise ModelNotFound(f"model {m.name!r} is not in a store folder, so its files cannot be found")
        m.verify()   # the folder's loaders open its files by name: each is checked here first
        return m.folder, m.name
    path = Path(manifest_or_path).expanduser()
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder (a model of the store is loaded by name with puhui.load)")
    return path, str(path)


QUANTS = ("int4",)


def load_causal_lm(manifest_or_path, dtype=None, device=None, quant: str | None = None) -> TextModel:
    """A text-generation model from a store Manifest, a GGUF file path or a Hugging Face folder path.

    quant="int4": the decoder layers' matrices as 4-bit weights (compress/int4.py) — a Q4_0 / Q4_1 GGUF's own
    codes, others quantised group-wise; the rest in bfloat16 unless a dtype is given. CPU only."""
    from ..text.tokenizer import Tokenizer

    if quant is not None and quant not in QUANTS:
        raise BadInput(f"quant {quant!r} (use one of: {', '.join(QUANTS)}, or none)")
    path, label = _weights_path(manifest_or_path)
    dtype, device = resolve_dtype(dtype), resolve_device(device)
    if quant == "int4":
        from ..compress.int4 import check_int4_device
        check_int4_device(device)
        dtype = dtype or torch.bfloat16
    g = None
    extra_eos: set[int] = set()
    if path.is_file():
        if path.suffix != ".gguf":
            raise Unsupported(f"{label}: a text model must be a .gguf file or a Hugging Face folder, not {path.name}")
        from ..formats.gguf import hf_config_llama, hf_state_dict_llama, read_gguf
        from .checkpoint import build
        from .llama import Llama, LlamaConfig, from_hf_state_dict

        g = read_gguf(path)
        damaged = f"{path}: damaged GGUF file"
        try:
            config = LlamaConfig.from_hf(hf_config_llama(g.metadata, g.tensors))   # Unsupported names the arch
            state = from_hf_state_dict(hf_state_dict_llama(g, dtype or torch.float32), config)
        except BadCheckpoint as e:
            raise BadCheckpoint(f"{damaged}: {e}{_unmapped(g)}") from None
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:  # metadata missing or of the wrong type
            raise BadCheckpoint(f"{damaged}: its metadata do not describe a model ({type(e).__name__}: {e})") \
                from None
        try:
            model = build(Llama, config, state, dtype, device, where=damaged)
        except BadCheckpoint as e:
            raise BadCheckpoint(f"{e}{_unmapped(g)}") from None
        tokenizer = Tokenizer.from_gguf(g.metadata)
        for key in ("eot", "eom"):
            token_id = g.metadata.get(f"tokenizer.ggml.{key}_token_id")
            if token_id is not None:
                extra_eos.add(int(token_id))
    else:
        from .checkpoint import read_config
        from . import load_text_model

        model_type = read_config(path).get("model_type")
        if model_type == "bert":
            raise Unsupported(f"{label} is a bert encoder: it makes embeddings, it does not generate text")
        model, config = load_text_model(path, dtype=dtype, device=device)
        tokenizer = Tokenizer.from_folder(path)
        extra_eos |= _generation_config_eos(path)
    if quant == "int4":
        from ..compress.int4 import llama_to_int4
        from .llama import Llama

        if not isinstance(model, Llama):
            raise Unsupported(f"{label}: int4 weights for a {type(model).__name__} model (supported: Llama family)")
        llama_to_int4(model, g)
    eos = {tokenizer.eos_id} if tokenizer.eos_id is not None else set()
    eos_ids = frozenset(t for t in eos | extra_eos if t < config.vocab_size)
    template = tokenizer.chat_template
    turn = {tokenizer.token_to_id(t) for t in END_OF_TURN_TOKENS if template and t in template}
    turn = {t for t in turn if t is not None and t < config.vocab_size}
    return TextModel(model, config, tokenizer, template, eos_ids, eos_ids | frozenset(turn), label)


def _unmapped(g) -> str:
    """The file's tensors no Llama tensor comes from (a garbled name shows up here), as the end of a message."""
    from ..formats.gguf import hf_name

    names = [n for n in g.tensors if hf_name(n) is None and not n.startswith("rope_freqs.")]
    return f"; tensors it has that no Llama tensor is named: {names[:5]}" if names else ""


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors file into a model built already (a puhui-trained MLP, DeepFM ...): its tensors must be
    the model's, name for name and shape for shape; BadCheckpoint saying the file is damaged, naming it and the
    tensors at fault, otherwise (not torch's traceback)."""
    from ..formats.safetensors import load_state_dict

    state = load_state_dict(path)
    check_state_dict(model.state_dict(), state, f"{path}: damaged checkpoint", type(model).__name__,
                     f"the {type(model).__name__} has")
    model.load_state_dict(state)
    return model


def _generation_config_eos(folder: Path) -> set[int]:
    from ..store.manifest import read_json

    config = read_json(folder / "generation_config.json", {})
    eos = config.get("eos_token_id") if isinstance(config, dict) else None
    if isinstance(eos, int):
        return {eos}
    return {int(t) for t in eos or () if isinstance(t, int)} if isinstance(eos, list) else set()


@dataclass
class SentenceEncoder:
    """A BERT encoder with its tokenizer and sentence-transformers pooling."""

    model: nn.Module
    config: object          # BertConfig
    tokenizer: object       # text.tokenizer.Tokenizer, truncating at max_length, not padding
    pooling: str            # "mean" | "cls" | "max" | "mean_sqrt_len"
    normalize: bool
    max_length: int
    source: str

    @property
    def dim(self) -> int:
        return self.config.dim


POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")


def load_sentence_encoder(manifest_or_path, dtype=None, device=None) -> SentenceEncoder:
    """An embeddings model from a store Manifest or a folder path."""
    from ..store.describe import SENTENCE_KEYS, sentence_facts
    from ..store.manifest import Manifest
    from ..text.tokenizer import Tokenizer
    from .bert import load_bert
    from .checkpoint import read_config

    path, label = _weights_path(manifest_or_path)
    if not path.is_dir():
        raise Unsupported(f"{label}: embeddings need a Hugging Face folder (config.json, safetensors, tokenizer.json)")
    model_type = read_config(path).get("model_type")
    if model_type != "bert":
        raise Unsupported(f"{label}: embeddings from a {model_type!r} model (supported: bert)")
    extra = manifest_or_path.extra if isinstance(manifest_or_path, Manifest) else {}
    facts = extra if all(k in extra for k in SENTENCE_KEYS) else sentence_facts(path)  # older manifests: the folder
    pooling = facts["pooling"]
    if not isinstance(pooling, str) or pooling not in POOLING_MODES:
        modes = " + ".join(pooling) if isinstance(pooling, list) else pooling
        raise Unsupported(f"{label}: pooling {modes} (supported: {', '.join(POOLING_MODES)})")
    model, config = load_bert(path, dtype=resolve_dtype(dtype), device=resolve_device(device))
    tokenizer = Tokenizer.from_folder(path)
    max_length = int(min(facts["max_seq_length"] or config.max_seq_len, config.max_seq_len))
    backend = tokenizer.backend
    backend.no_padding()
    backend.enable_truncation(max_length)
    return SentenceEncoder(model, config, tokenizer, pooling, bool(facts["normalize"]), max_length, label)
