"""LoRA adapters served beside their base in one batch (engine/adapters.py): PEFT's files read as they are,
PEFT's logits, and a batch mixing the base and two adapters giving each row what it gives alone."""
from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from puhui.engine import LLMEngine, SamplingParams  # noqa: E402
from puhui.engine.adapters import AdapterSet, read_adapter  # noqa: E402
from puhui.errors import BadInput, Unsupported  # noqa: E402
from puhui.models import load_llama  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A random tiny HF Llama (grouped-query attention) saved locally, and two PEFT adapters of it with
    random (non-zero) B, different ranks and targets."""
    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    hf = transformers.LlamaForCausalLM(config).eval()
    hf.save_pretrained(root / "base")
    adapters = {}
    for name, r, targets, rslora in (("one", 4, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"], False),
                                     ("two", 8, ["q_proj", "v_proj", "down_proj"], True)):
        torch.manual_seed(len(name) + r)
        model = peft.get_peft_model(copy.deepcopy(hf),
                                    peft.LoraConfig(r=r, lora_alpha=16, target_modules=targets, use_rslora=rslora))
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.2)
        model.save_pretrained(root / name)
        adapters[name] = model.eval()
    return root, hf, adapters


def _tokens(n=12, seed=1):
    return torch.randint(0, 128, (1, n), generator=torch.Generator().manual_seed(seed))


def test_an_adapter_gives_pefts_logits(base):
    root, hf, adapters = base
    model, _ = load_llama(root / "base")
    rows = AdapterSet(model)
    for name, peft_model in adapters.items():
        slot = rows.add(read_adapter(root / name))
        tokens = _tokens()
        rows.select([slot])
        ours = model(tokens)
        with torch.no_grad():
            theirs = peft_model(tokens).logits
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    rows.select([0])
    with torch.no_grad():
        torch.testing.assert_close(model(_tokens()), hf(_tokens()).logits, atol=1e-4, rtol=1e-4)


def test_a_batch_mixing_base_and_adapters_gives_each_row_its_own(base):
    root, _, _ = base
    model, _ = load_llama(root / "base")
    engine = LLMEngine(model, max_batch=6, context_length=128, eos_ids=())
    for name in ("one", "two"):
        engine.add_adapter(read_adapter(root / name))
    prompts = [[int(t) for t in _tokens(5 + i, seed=i)[0]] for i in range(6)]
    which = [None, "one", "two", "one", None, "two"]
    params = SamplingParams(max_tokens=6, temperature=0, logprobs=3)

    def run(rows):
        ids = [engine.enqueue(engine.make_request(prompts[i], params, adapter=which[i])) for i in rows]
        outs = {o.request_id: o for o in engine.outputs(ids) if o.finished}
        return [outs[i].outputs[0] for i in ids]

    together = run(range(6))
    for i in range(6):
        alone = run([i])[0]
        assert alone.token_ids == together[i].token_ids
        for a, b in zip(alone.logprobs, together[i].logprobs):
            assert abs(a.logprob - b.logprob) < 1e-5
    # the adapters change the answers: each row really ran with its own
    assert len({tuple(c.token_ids) for c in together[:3]}) == 3


def test_adapters_that_do_not_fit_are_refused(base, tmp_path):
    root, _, _ = base
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "other")
    other, _ = load_llama(tmp_path / "other")
    with pytest.raises(BadInput, match="another model|layer 1") as e:
        AdapterSet(other).add(read_adapter(root / "one"))
    assert e.value.param == "adapter"
    with pytest.raises(BadInput, match="not a LoRA adapter folder"):
        read_adapter(tmp_path)
    (tmp_path / "dora").mkdir()
    (tmp_path / "dora" / "adapter_config.json").write_text('{"peft_type": "LORA", "use_dora": true}')
    with pytest.raises(Unsupported, match="DoRA"):
        read_adapter(tmp_path / "dora")
    model, _ = load_llama(root / "base")
    engine = LLMEngine(model, max_batch=2, context_length=64, eos_ids=())
    with pytest.raises(BadInput, match="not loaded") as e:
        engine.make_request([1, 2, 3], SamplingParams(max_tokens=2), adapter="one")
    assert e.value.param == "model"
    engine.add_adapter(read_adapter(root / "one"))
    rid = engine.enqueue(engine.make_request([1, 2, 3], SamplingParams(max_tokens=4), adapter="one"))
    with pytest.raises(BadInput, match="in use"):
        engine.remove_adapter("one")
    list(engine.outputs([rid]))
    engine.remove_adapter("one")
    assert engine.adapter_names() == []
