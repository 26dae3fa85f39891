"""Parity of puhui.models (llama, gpt2, bert) with transformers, on tiny random checkpoints saved locally."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from puhui.errors import BadInput, Unsupported  # noqa: E402
from puhui.models import Llama, LlamaConfig, load_bert, load_gpt2, load_llama, load_text_model  # noqa: E402

TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
            bos_token_id=None, eos_token_id=None, pad_token_id=None)
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 32}  # short, so low, medium and high frequencies all occur

DECODERS = {
    "llama-gqa": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)),
    "llama3-rope": lambda: transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**TINY, rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE))),
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**TINY)),
    "mistral-sliding": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(**TINY, sliding_window=16)),
    "smollm-tied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY, tie_word_embeddings=True)),
    "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.2,
        bos_token_id=None, eos_token_id=None)),
}


pytestmark = pytest.mark.usefixtures("one_thread")   # small models: threads only cost time


def _save(model, path):
    model.config._attn_implementation = "eager"
    model.eval().save_pretrained(path, safe_serialization=True)
    return model


@pytest.fixture(scope="module", params=list(DECODERS))
def decoder(request, tmp_path_factory):
    """(name, transformers model, our model) for one architecture."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp(request.param)
    hf = _save(DECODERS[request.param](), path)
    ours, _ = load_text_model(path)
    return request.param, hf, ours


def _prompt(n, seed=1):
    return torch.randint(0, 1000, (n,), generator=torch.Generator().manual_seed(seed))


def greedy(model, prompts: list[torch.Tensor], slots: list[int], n_new: int) -> list[list[int]]:
    """Prefill right-padded prompts together (pads at input_pos -1), then decode one token at a time."""
    B, lens = len(prompts), torch.tensor([len(p) for p in prompts])
    tokens = torch.zeros(B, int(lens.max()), dtype=torch.long)
    pos = torch.full_like(tokens, -1)
    for b, p in enumerate(prompts):
        tokens[b, :len(p)], pos[b, :len(p)] = p, torch.arange(len(p))
    slots_t = torch.tensor(slots)
    with torch.no_grad():
        nxt = model(tokens, pos, slots_t)[torch.arange(B), lens - 1].argmax(-1)
        out = [nxt]
        for i in range(n_new - 1):
            nxt = model(nxt[:, None], (lens + i)[:, None], slots_t)[:, -1].argmax(-1)
            out.append(nxt)
    return torch.stack(out, 1).tolist()


def test_logits_match_transformers(decoder):
    _, hf, ours = decoder
    ours.drop_cache()
    tokens = _prompt(64)[None]
    with torch.no_grad():
        want, got = hf(tokens).logits.float(), ours(tokens).float()
    assert got.shape == want.shape == (1, 64, 1000)
    assert (got - want).abs().max().item() <= 1e-4


def test_greedy_with_cache_matches_generate(decoder):
    _, hf, ours = decoder
    prompt = _prompt(40, seed=2)
    want = hf.generate(prompt[None], attention_mask=torch.ones(1, 40, dtype=torch.long), max_new_tokens=32,
                       min_new_tokens=32, do_sample=False, pad_token_id=0)[0, 40:].tolist()
    ours.setup_cache(n_slots=4, max_seq_len=128)
    assert greedy(ours, [prompt], [1], 32) == [want]
    assert len(set(want)) > 4  # not a degenerate repetition


def test_batched_prefill_in_slots_matches_alone(decoder):
    _, _, ours = decoder
    prompts = [_prompt(7, 3), _prompt(20, 4), _prompt(13, 5)]
    ours.setup_cache(n_slots=4, max_seq_len=128)
    alone = [greedy(ours, [p], [0], 32)[0] for p in prompts]  # also leaves stale keys in slot 0
    assert greedy(ours, prompts, [3, 0, 2], 32) == alone
    ours.drop_cache()  # cache-less path: a padded batch gives each row its own logits
    tokens = torch.zeros(3, 20, dtype=torch.long)
    pos = torch.full_like(tokens, -1)
    for b, p in enumerate(prompts):
        tokens[b, :len(p)], pos[b, :len(p)] = p, torch.arange(len(p))
    with torch.no_grad():
        batch = ours(tokens, pos)
        for b, p in enumerate(prompts):
            assert torch.allclose(batch[b, :len(p)], ours(p[None])[0], atol=1e-5)


def test_sliding_window_matters(tmp_path):
    torch.manual_seed(0)
    _save(DECODERS["mistral-sliding"](), tmp_path)
    ours, config = load_llama(tmp_path)
    assert config.sliding_window == 16
    full = Llama(dataclasses.replace(config, sliding_window=None))
    full.load_state_dict(ours.state_dict())
    tokens = _prompt(64)[None]
    with torch.no_grad():
        windowed, unwindowed = ours(tokens), full(tokens)
    assert torch.allclose(windowed[:, :16], unwindowed[:, :16], atol=1e-5)
    assert (windowed[:, 16:] - unwindowed[:, 16:]).abs().max() > 1e-2


def test_load_in_another_dtype(tmp_path):
    torch.manual_seed(0)
    _save(DECODERS["llama3-rope"](), tmp_path)
    model, config = load_llama(tmp_path, dtype=torch.bfloat16)
    assert config.rope_scaling["rope_type"] == "llama3" and config.rope_theta == 500000.0
    assert model.tok_embeddings.weight.dtype == torch.bfloat16 and model.inv_freq.dtype == torch.float32
    model.setup_cache(2, 64)
    with torch.no_grad():
        logits = model(_prompt(10)[None])
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_config_from_hf_fields():
    c = LlamaConfig.from_hf({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 10,
                             "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
                             "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
                             "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": True})
    assert (c.head_dim, c.qkv_bias, c.out_bias, c.tie_embeddings, c.rope_theta, c.n_kv_heads) == \
        (32, True, False, True, 1e6, 1)
    old_style = LlamaConfig.from_hf({"model_type": "llama", "vocab_size": 10, "hidden_size": 64,
                                     "intermediate_size": 96, "num_hidden_layers": 1, "num_attention_heads": 4,
                                     "rope_theta": 5e5, "rope_scaling": LLAMA3_ROPE, "attention_bias": True})
    assert old_style.rope_scaling == LLAMA3_ROPE and old_style.rope_theta == 5e5
    assert (old_style.head_dim, old_style.n_kv_heads, old_style.qkv_bias, old_style.out_bias) == (16, 4, True, True)


def test_unsupported(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(Unsupported, match="t5"):
        load_text_model(tmp_path)
    base = {"model_type": "llama", "vocab_size": 10, "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 1, "num_attention_heads": 4}
    with pytest.raises(Unsupported, match="yarn"):
        LlamaConfig.from_hf({**base, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(Unsupported, match="LlamaForSequenceClassification"):
        LlamaConfig.from_hf({**base, "architectures": ["LlamaForSequenceClassification"]})
    with pytest.raises(Unsupported, match="gemma"):
        LlamaConfig.from_hf({**base, "model_type": "gemma"})
    with pytest.raises(BadInput):
        load_text_model(tmp_path / "nowhere")


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_bert_matches_transformers(tmp_path, prefix):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=128)
    hf = _save(transformers.BertModel(config), tmp_path)
    if prefix:  # as saved by a BertFor... head model: "bert." names, plus head tensors to skip
        sd = {prefix + k: v.contiguous() for k, v in hf.state_dict().items()}
        sd["cls.predictions.bias"] = torch.zeros(1000)
        (tmp_path / "model.safetensors").unlink()
        save_file(sd, tmp_path / "model.safetensors")
    ours, _ = load_bert(tmp_path)
    ids = torch.stack([_prompt(24, 6), _prompt(24, 7)])
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    ids[1, 15:] = 0
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
        emb = ours.embed(ids, mask)
        alone = ours.embed(ids[1:, :15])
    assert (got - want).abs().max().item() <= 1e-4
    m = mask[..., None].float()
    ref = torch.nn.functional.normalize((want * m).sum(1) / m.sum(1), dim=-1)
    assert (emb - ref).abs().max().item() <= 1e-5
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2))
    assert torch.allclose(emb[1], alone[0], atol=1e-5)
