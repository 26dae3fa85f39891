"""A LoRA adapter merged into its base, written as a model other tools load: a Hugging Face folder
(safetensors + config.json + tokenizer) or a GGUF file (`puhui models export NAME --merged --format ...`).

Policy:
- The merge is PEFT's: W += scaling * B @ A on each adapted projection, in float32, on the base's weights under
  their Hugging Face names (a GGUF base is dequantised first; its q/k rows are in HF's rope layout there).
- GGUF: every metadata key of the base's GGUF is kept with its own type (tokenizer, chat template, rope ...),
  the tensors are written in float32 (F32: nothing lost to a second quantisation; quantise it with llama.cpp's
  tools if you want a smaller file), q/k permuted back into llama.cpp's layout. A base that is not a GGUF has no
  tokenizer metadata to keep: export it as safetensors.
- Files are written into a temp name beside the target and renamed into place.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import BadInput, Unsupported


def merged_state_dict(base_manifest, adapter_folder) -> tuple[dict, dict]:
    """(HF state dict of the base with the adapter merged, the base's HF config)."""
    from ..engine.adapters import read_adapter
    from ..models.checkpoint import read_config
    from ..formats.safetensors import load_state_dict

    path = base_manifest.path()
    if base_manifest.format == "gguf":
        from ..formats.gguf import read_gguf

        g = read_gguf(path)
        state, config = g.hf_state_dict(), g.hf_config()
    else:
        folder = path if path.is_dir() else path.parent
        state, config = dict(load_state_dict(folder)), read_config(folder)
        state = {k: v.float() for k, v in state.items()}
    adapter = read_adapter(adapter_folder)
    for (layer, part), (a, b) in adapter.pairs.items():
        group = "self_attn" if part in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        key = f"model.layers.{layer}.{group}.{part}.weight"
        if key not in state:
            raise BadInput(f"the adapter adapts {key}, which the base has not", param="adapter")
        if state[key].shape != (b.shape[0], a.shape[1]):
            raise BadInput(f"the adapter's {key} is {b.shape[0]}x{a.shape[1]}, the base's "
                           f"{tuple(state[key].shape)}", param="adapter")
        state[key] = state[key] + adapter.scaling * (b @ a)
    return state, config


def export_safetensors(base_manifest, adapter_folder, out: str | Path, tokenizer=None) -> Path:
    """A Hugging Face folder: model.safetensors, config.json, generation defaults and the tokenizer."""
    from safetensors.torch import save_file

    state, config = merged_state_dict(base_manifest, adapter_folder)
    if config.get("tie_word_embeddings") and "lm_head.weight" in state:
        state.pop("lm_head.weight")
    out = Path(out)
    tmp = _fresh(out)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    base_folder = base_manifest.path()
    base_folder = base_folder if base_folder.is_dir() else base_folder.parent
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (base_folder / name).is_file() and base_manifest.format != "gguf":
            shutil.copyfile(base_folder / name, tmp / name)
    if tokenizer is not None and not (tmp / "tokenizer.json").exists():
        tokenizer.backend.save(str(tmp / "tokenizer.json"))
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "chat_template": tokenizer.chat_template, "eos_token": tokenizer.eos_token,
            "bos_token": tokenizer.bos_token}))
    return _swap(tmp, out)


def export_gguf(base_manifest, adapter_folder, out: str | Path) -> Path:
    """A float32 GGUF of the merged model with every metadata key of the base's GGUF."""
    import gguf
    import numpy as np

    if base_manifest.format != "gguf":
        raise Unsupported("a merged GGUF keeps its base GGUF's tokenizer and metadata; this base is "
                          f"{base_manifest.format}: export it with --format safetensors", param="format")
    from ..formats.gguf import hf_name

    state, _ = merged_state_dict(base_manifest, adapter_folder)
    reader = gguf.GGUFReader(base_manifest.path())
    arch = reader.fields["general.architecture"].contents()
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_heads = int(reader.fields.get(f"{arch}.attention.head_count_kv", reader.fields[
        f"{arch}.attention.head_count"]).contents())
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        if key == "general.file_type":
            value = int(gguf.LlamaFileType.ALL_F32)
        types = field.types
        writer.add_key_value(key, value, types[0], sub_type=types[1] if len(types) > 1 else None)
    for t in reader.tensors:
        target = hf_name(t.name)
        if target is None:
            w = torch.from_numpy(np.array(t.data, dtype=np.float32)).reshape([int(d) for d in reversed(t.shape)]) \
                if t.tensor_type in (gguf.GGMLQuantizationType.F32,) else None
            if w is None:
                raise Unsupported(f"base tensor {t.name} ({t.tensor_type.name}) has no counterpart to write",
                                  param="format")
        else:
            w = state[target]
            if arch == "llama" and ".attn_q." in t.name:
                w = _permute(w, heads)
            elif arch == "llama" and ".attn_k." in t.name:
                w = _permute(w, kv_heads)
        writer.add_tensor(t.name, w.float().contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out


def _permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF's rotate-half q/k rows -> llama.cpp's interleaved pairs (the inverse of formats.gguf.unpermute_rope)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _fresh(out: Path) -> Path:
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _swap(tmp: Path, out: Path) -> Path:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return out
