"""engine/ (LLMEngine, Scheduler, ModelRunner, Sequence), models/loader.py and tasks/text.py on tiny random
models saved locally with transformers and a tokenizer trained here: fast, no packaged weights."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer as BackendTokenizer  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

import puhui  # noqa: E402
from puhui import store  # noqa: E402
from puhui.engine.llm_engine import EngineStats, LLMEngine  # noqa: E402
from puhui.engine.sampling import SamplingParams  # noqa: E402
from puhui.errors import BadInput, Unsupported  # noqa: E402
from puhui.models.loader import load_causal_lm  # noqa: E402

TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = ["The quick brown fox jumps over the lazy dog. " * 3, "Hello world, how are you today? Fine, thanks.",
          "Once upon a time there was a cat who liked to sleep in the sun, all day long."]
PROMPTS = ["Hello world", "The quick brown fox jumps over", "Once", "a cat who liked to sleep in the sun, all"]
GREEDY = dict(temperature=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")   # small models: threads only cost time


def save_tokenizer(path, extra_text=()):
    """A byte-level BPE trained on ASCII text here (so every token decodes to clean text) plus the
    bytes of `extra_text`, with ChatML specials; id 0 is <|endoftext|>, the eos."""
    tok = BackendTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  show_progress=False)
    tok.train_from_iterator(CORPUS + list(extra_text), trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "bos_token": None, "chat_template": TEMPLATE}))
    return tok.get_vocab_size()


def save_llama(path, extra_text=(), **overrides):
    path.mkdir(parents=True, exist_ok=True)
    vocab = save_tokenizer(path, extra_text)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                      initializer_range=0.2, bos_token_id=None, eos_token_id=0, pad_token_id=None,
                                      **overrides)
    hf = transformers.LlamaForCausalLM(config)
    hf.config._attn_implementation = "eager"
    hf.eval().save_pretrained(path, safe_serialization=True)
    return hf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(folder, transformers model, our TextModel)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    hf = save_llama(path)
    return path, hf, load_causal_lm(path)


@pytest.fixture
def engine(tiny):
    """A fresh engine over the module's model for each test (the model's cache belongs to the newest engine)."""
    _, _, tm = tiny
    return LLMEngine(tm.model, tm.tokenizer, max_batch=4, eos_ids=tm.eos_ids)


def run(engine, prompts, **kw):
    return engine.generate(prompts, SamplingParams(**kw))


def alone(engine, prompt, **kw):
    return run(engine, [prompt], **kw)[0]


def hf_logprobs(hf, ids):
    with torch.no_grad():
        return torch.log_softmax(hf(torch.tensor([ids])).logits[0].float(), -1)


# ------------------------------------------------------------------------------------------ batching

def test_batched_equals_alone(engine):
    batched = run(engine, PROMPTS, max_tokens=12, ignore_eos=True, **GREEDY)
    for prompt, out in zip(PROMPTS, batched):
        single = alone(engine, prompt, max_tokens=12, ignore_eos=True, **GREEDY)
        assert out.outputs[0].token_ids == single.outputs[0].token_ids
        assert out.outputs[0].text == single.outputs[0].text
        assert out.usage.completion_tokens == 12
        assert out.usage.prompt_tokens == len(engine.tokenizer.encode(prompt))


def test_continuous_batching_joins_at_token_boundary(engine):
    params = SamplingParams(max_tokens=10, ignore_eos=True, **GREEDY)
    expected = {p: alone(engine, p, max_tokens=10, ignore_eos=True, **GREEDY).outputs[0].token_ids
                for p in PROMPTS}
    ids = {engine.add_request(PROMPTS[0], params): PROMPTS[0], engine.add_request(PROMPTS[1], params): PROMPTS[1]}
    got = {}
    for i in range(40):
        if i == 3:   # two sequences are mid-decode
            ids[engine.add_request(PROMPTS[2], params)] = PROMPTS[2]
        if i == 5:
            ids[engine.add_request(PROMPTS[3], params)] = PROMPTS[3]
        for out in engine.step():
            if out.finished:
                got[ids[out.request_id]] = out.outputs[0].token_ids
        if len(got) == 4:
            break
    assert got == expected
    assert not engine.has_unfinished() and sorted(engine.scheduler.free_slots) == [0, 1, 2, 3]


def test_more_requests_than_slots_queue(tiny):
    _, _, tm = tiny
    small = LLMEngine(tm.model, tm.tokenizer, max_batch=2, eos_ids=tm.eos_ids)
    params = [SamplingParams(max_tokens=n, ignore_eos=True, **GREEDY) for n in (3, 9, 5, 7)]
    outs = small.generate(PROMPTS, params)
    for prompt, p, out in zip(PROMPTS, params, outs):
        assert len(out.outputs[0].token_ids) == p.max_tokens
        ref = alone(small, prompt, max_tokens=p.max_tokens, ignore_eos=True, **GREEDY)
        assert out.outputs[0].token_ids == ref.outputs[0].token_ids


# ------------------------------------------------------------------------------------------ vs transformers

def test_greedy_tokens_and_logprobs_match_transformers(tiny, engine):
    _, hf, _ = tiny
    prompt_ids = engine.tokenizer.encode(PROMPTS[1])
    out = alone(engine, prompt_ids, max_tokens=8, logprobs=3, ignore_eos=True, **GREEDY).outputs[0]
    lp = hf_logprobs(hf, prompt_ids + out.token_ids)
    n = len(prompt_ids)
    for j, (token, ours) in enumerate(zip(out.token_ids, out.logprobs)):
        ref = lp[n - 1 + j]
        assert token == int(ref.argmax())
        assert ours.token_id == token
        assert abs(ours.logprob - float(ref[token])) <= 1e-4
        top = ref.topk(3)
        assert [t for t, _ in ours.top] == top.indices.tolist()
        assert np.allclose([v for _, v in ours.top], top.values.numpy(), atol=1e-4)
    assert len(out.logprobs) == 8


def test_echo_returns_prompt_and_its_logprobs(tiny, engine):
    _, hf, _ = tiny
    prompt = PROMPTS[3]
    out = alone(engine, prompt, max_tokens=4, logprobs=2, echo=True, ignore_eos=True, **GREEDY)
    c = out.outputs[0]
    plain = alone(engine, prompt, max_tokens=4, ignore_eos=True, **GREEDY).outputs[0]
    assert c.text == prompt + plain.text
    ids = out.prompt_token_ids
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(ids)
    lp = hf_logprobs(hf, ids)
    for j in range(1, len(ids)):
        assert out.prompt_logprobs[j].token_id == ids[j]
        assert abs(out.prompt_logprobs[j].logprob - float(lp[j - 1, ids[j]])) <= 1e-4
        assert [t for t, _ in out.prompt_logprobs[j].top] == lp[j - 1].topk(2).indices.tolist()
    assert c.logprobs[:len(ids)] == out.prompt_logprobs and len(c.logprobs) == len(ids) + 4
    assert out.usage.completion_tokens == 4


# ------------------------------------------------------------------------------------------ sampling

def test_n2_seeded_reproducible_and_different(engine):
    kw = dict(max_tokens=10, temperature=1.0, seed=7, n=2, ignore_eos=True)
    a = alone(engine, PROMPTS[0], **kw)
    b = alone(engine, PROMPTS[0], **kw)
    assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]
    assert a.outputs[0].token_ids != a.outputs[1].token_ids
    assert a.usage.completion_tokens == 20 and a.usage.prompt_tokens == len(a.prompt_token_ids)
    # a seeded request samples the same whatever shares its batch
    mixed = engine.generate([PROMPTS[1], PROMPTS[0]], [SamplingParams(max_tokens=6, temperature=1.0),
                                                        SamplingParams(**kw)])
    assert [c.token_ids for c in mixed[1].outputs] == [c.token_ids for c in a.outputs]
    c = alone(engine, PROMPTS[0], **{**kw, "seed": 8})
    assert [x.token_ids for x in c.outputs] != [x.token_ids for x in a.outputs]


def test_logit_bias_and_penalties(engine):
    forced = alone(engine, PROMPTS[0], max_tokens=5, logit_bias={42: 100}, ignore_eos=True, **GREEDY)
    assert forced.outputs[0].token_ids == [42] * 5
    banned = alone(engine, PROMPTS[0], max_tokens=5, logit_bias={42: 100}, frequency_penalty=2.0,
                   repetition_penalty=1.3, presence_penalty=1.0, ignore_eos=True, **GREEDY)
    assert len(banned.outputs[0].token_ids) == 5
    # top_k=1 samples the greedy token
    greedy = alone(engine, PROMPTS[2], max_tokens=6, ignore_eos=True, **GREEDY).outputs[0].token_ids
    assert alone(engine, PROMPTS[2], max_tokens=6, ignore_eos=True, top_k=1, seed=3).outputs[0].token_ids == greedy


# ------------------------------------------------------------------------------------------ stopping

def test_max_tokens_gives_length(engine):
    out = alone(engine, PROMPTS[0], max_tokens=3, ignore_eos=True, **GREEDY)
    assert out.finished and out.outputs[0].finish_reason == "length" and len(out.outputs[0].token_ids) == 3
    assert out.usage.completion_tokens == 3 and out.usage.total_tokens == 3 + out.usage.prompt_tokens


def test_stop_string_across_token_boundary(engine):
    tok = engine.tokenizer
    full = alone(engine, PROMPTS[1], max_tokens=16, ignore_eos=True, **GREEDY).outputs[0]
    # where each token's text ends inside the full text
    ends = [len(tok.decode(full.token_ids[:k + 1])) for k in range(len(full.token_ids))]
    k = next(k for k in range(1, len(ends) - 1) if ends[k] - ends[k - 1] >= 1 and ends[k] >= 2
             and len(tok.decode(full.token_ids[:k])) >= 2)
    boundary = ends[k - 1]                    # token k starts here
    stop = full.text[boundary - 1:boundary + 1]   # last char of token k-1 + first char of token k
    at = full.text.find(stop)
    streamed = list(engine.stream(PROMPTS[1], SamplingParams(max_tokens=16, stop=[stop], ignore_eos=True, **GREEDY)))
    final = streamed[-1].outputs[0]
    assert final.text == full.text[:at]
    assert "".join(o.outputs[0].delta for o in streamed) == final.text
    assert final.finish_reason == "stop" and final.stop_reason == stop
    assert stop not in final.text


def test_stop_token_and_eos(tiny, engine):
    _, _, tm = tiny
    full = alone(engine, PROMPTS[2], max_tokens=8, ignore_eos=True, **GREEDY).outputs[0]
    t = full.token_ids[3]
    first = full.token_ids.index(t)
    out = alone(engine, PROMPTS[2], max_tokens=8, stop_token_ids=[t], ignore_eos=True, **GREEDY).outputs[0]
    assert out.token_ids == full.token_ids[:first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == t
    eos_engine = LLMEngine(tm.model, tm.tokenizer, max_batch=1, eos_ids=[t])
    assert alone(eos_engine, PROMPTS[2], max_tokens=8, **GREEDY).outputs[0].token_ids == full.token_ids[:first + 1]
    assert alone(eos_engine, PROMPTS[2], max_tokens=8, ignore_eos=True, **GREEDY).outputs[0].token_ids == full.token_ids


def test_streaming_deltas_join_to_text(tmp_path):
    """A vocabulary with byte tokens of CJK text: deltas never hold a broken character that the final text
    does not have, and they join to the text."""
    path = tmp_path / "cjk"
    save_llama(path, extra_text=["你好世界，今天天气很好。", "Grüße aus Köln"])
    tm = load_causal_lm(path)
    eng = LLMEngine(tm.model, tm.tokenizer, max_batch=2)
    params = SamplingParams(max_tokens=24, temperature=1.0, seed=1, ignore_eos=True)
    outs = list(eng.stream("你好", params))
    text = outs[-1].outputs[0].text
    assert "".join(o.outputs[0].delta for o in outs) == text
    assert text == tm.tokenizer.decode(outs[-1].outputs[0].token_ids, skip_special_tokens=True)
    for o in outs[:-1]:
        assert not o.outputs[0].delta.endswith("\ufffd") or "\ufffd" in text


# ------------------------------------------------------------------------------------------ errors, abort

def test_context_overflow_names_both_numbers(tiny):
    _, _, tm = tiny
    eng = LLMEngine(tm.model, tm.tokenizer, max_batch=1, context_length=32)
    with pytest.raises(BadInput) as e:
        eng.add_request(list(range(3, 43)), SamplingParams(max_tokens=1))
    assert "40" in str(e.value) and "32" in str(e.value)
    with pytest.raises(BadInput) as e:
        eng.add_request(list(range(3, 23)), SamplingParams(max_tokens=20))
    assert "20" in str(e.value) and "32" in str(e.value) and "max_tokens" in str(e.value)
    assert not eng.has_unfinished()
    with pytest.raises(BadInput) as e:
        LLMEngine(tm.model, tm.tokenizer, context_length=4096)
    assert "4096" in str(e.value) and "128" in str(e.value)


def test_bad_requests(engine):
    for mt in (0, -3):
        with pytest.raises(BadInput, match="max_tokens"):
            SamplingParams(max_tokens=mt)
    with pytest.raises(BadInput, match="empty"):
        engine.add_request([], SamplingParams())
    with pytest.raises(BadInput, match="outside the vocabulary"):
        engine.add_request([1, 10**6], SamplingParams())
    with pytest.raises(BadInput, match="logit_bias"):
        engine.add_request("Hi", SamplingParams(logit_bias={10**6: 1}))
    # one bad prompt in a batch: nothing is queued
    with pytest.raises(BadInput):
        engine.generate(["fine", list(range(3, 200))], SamplingParams(max_tokens=2))
    assert not engine.has_unfinished() and not engine.requests


def test_abort_frees_the_slot(tiny):
    _, _, tm = tiny
    eng = LLMEngine(tm.model, tm.tokenizer, max_batch=1)
    params = SamplingParams(max_tokens=50, ignore_eos=True, **GREEDY)
    rid = eng.add_request(PROMPTS[0], params)
    waiting = eng.add_request(PROMPTS[1], params)
    eng.step()
    eng.step()
    assert eng.scheduler.free_slots == [] and len(eng.scheduler.waiting) == 1
    assert eng.abort(rid) and not eng.abort(rid)
    assert eng.scheduler.free_slots == [0] and not eng.scheduler.running
    assert eng.abort(waiting) and not eng.has_unfinished()
    out = eng.generate(PROMPTS[2], SamplingParams(max_tokens=5, ignore_eos=True, **GREEDY))[0]
    ref = LLMEngine(tm.model, tm.tokenizer, max_batch=1).generate(
        PROMPTS[2], SamplingParams(max_tokens=5, ignore_eos=True, **GREEDY))[0]
    assert out.outputs[0].token_ids == ref.outputs[0].token_ids


def test_closing_a_stream_aborts(engine):
    it = engine.stream(PROMPTS[0], SamplingParams(max_tokens=30, ignore_eos=True, **GREEDY))
    next(it)
    it.close()
    assert not engine.has_unfinished() and sorted(engine.scheduler.free_slots) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------ dtypes, archs

def test_bfloat16_runs(tiny):
    path, _, tm = tiny
    bf = load_causal_lm(path, dtype="bfloat16")
    assert next(bf.model.parameters()).dtype == torch.bfloat16
    eng = LLMEngine(bf.model, bf.tokenizer, max_batch=2)
    outs = run(eng, PROMPTS[:2], max_tokens=6, ignore_eos=True, logprobs=1, **GREEDY)
    assert all(len(o.outputs[0].token_ids) == 6 for o in outs)
    assert all(np.isfinite(lp.logprob) for o in outs for lp in o.outputs[0].logprobs)


def test_gpt2_in_the_engine(tmp_path):
    vocab = save_tokenizer(tmp_path)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0))
    hf.config._attn_implementation = "eager"
    hf.eval().save_pretrained(tmp_path, safe_serialization=True)
    tm = load_causal_lm(tmp_path)
    eng = LLMEngine(tm.model, tm.tokenizer, max_batch=2)
    prompt = tm.tokenizer.encode(PROMPTS[0])
    out = eng.generate([prompt, tm.tokenizer.encode(PROMPTS[1])],
                       SamplingParams(max_tokens=6, ignore_eos=True, **GREEDY))[0].outputs[0]
    lp = hf_logprobs(hf, prompt + out.token_ids)
    assert out.token_ids == lp[len(prompt) - 1:-1].argmax(-1).tolist()


# ------------------------------------------------------------------------------------------ TextGenerator, loader

@pytest.fixture
def stored(home, tiny):
    path, _, _ = tiny
    store.import_path(path, "tiny-chat")
    return "tiny-chat"


def test_text_generator_from_the_store(stored):
    gen = puhui.load(stored)
    assert gen.context_length == 128 and gen.chat_template
    r = gen.generate("Hello world", max_tokens=5, temperature=0, ignore_eos=True)
    assert len(r.tokens) == 5 and r.finish_reason == "length" and r.usage.completion_tokens == 5
    assert r.text == gen.tokenizer.decode(r.tokens, skip_special_tokens=True)
    many = gen.generate(["Hello world", "Once"], max_tokens=5, temperature=0, ignore_eos=True)
    assert many[0].tokens == r.tokens and len(many) == 2
    c = gen.chat([{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0)
    im_end = gen.tokenizer.token_to_id("<|im_end|>")
    assert im_end not in c.tokens[:-1] and c.finish_reason in ("stop", "length")
    assert c.usage.prompt_tokens == len(gen.tokenizer.encode(gen.render("Hi"), add_special_tokens=False))
    deltas = list(gen.stream("Hello world", max_tokens=5, temperature=0, ignore_eos=True))
    assert "".join(deltas) == r.text
    chat_deltas = list(gen.stream([{"role": "user", "content": "Hi"}], max_tokens=6, temperature=0))
    assert "".join(chat_deltas) == c.text
    with pytest.raises(BadInput, match="temprature"):
        gen.generate("Hi", temprature=0.5)
    with pytest.raises(BadInput, match="max_tokens"):
        gen.generate("Hi", max_tokens=0)
    with pytest.raises(BadInput, match="128"):
        gen.generate("Hello " * 200)


def test_interleaved_calls_and_a_growing_cache(stored):
    gen = puhui.load(stored)
    kw = dict(temperature=0, ignore_eos=True)
    whole = gen.generate("Hello world", max_tokens=12, **kw).text
    other = gen.generate("Once", max_tokens=5, **kw).text
    engine = gen.engine
    assert engine.slots == 1 and engine.positions == 128
    s = gen.stream("Hello world", max_tokens=12, **kw)
    first = next(s)
    # another call steps the same engine meanwhile: the stream loses nothing
    assert gen.generate("Once", max_tokens=5, **kw).text == other
    # a batch needs more slots: the one engine's cache grows in place, and the stream goes on in its slot
    assert [r.text for r in gen.generate(["Once", "Once"], max_tokens=5, **kw)] == [other, other]
    assert gen.engine is engine and engine.slots == 2
    assert first + "".join(s) == whole
    assert not engine._outbox and not engine.has_unfinished()


def test_the_cache_grows_in_place_keeping_running_sequences(tiny):
    """Growing slots and positions while sequences decode: they finish as if the cache had been big from the
    start (their keys and values were copied into the larger cache)."""
    _, _, tm = tiny
    params = SamplingParams(max_tokens=40, ignore_eos=True, **GREEDY)
    ref = LLMEngine(tm.model, tm.tokenizer, max_batch=4, eos_ids=tm.eos_ids).generate(PROMPTS[:3], params)
    eng = LLMEngine(tm.model, tm.tokenizer, max_batch=4, eos_ids=tm.eos_ids, slots=1, positions=16)
    assert (eng.slots, eng.positions) == (1, 16)
    first = eng.add_request(PROMPTS[0], params)   # needs more positions: grows to a whole step (the context here)
    assert eng.positions == 128
    got = {}
    for i in range(200):
        if i == 4:
            eng.reserve(3, 1)
            assert eng.slots == 3 and eng.stats().running == 1
            rest = [eng.add_request(p, params) for p in PROMPTS[1:3]]
        for out in eng.step():
            if out.finished:
                got[out.request_id] = out.outputs[0].token_ids
        if len(got) == 3:
            break
    assert [got[r] for r in [first, *rest]] == [o.outputs[0].token_ids for o in ref]
    assert eng.stats() == EngineStats(running=0, waiting=0, slots=3, positions=128, max_batch=4, context_length=128)


def test_one_engine_a_model(tiny):
    """A second engine over the same model takes its cache; the first then refuses to run instead of reading
    the other's keys."""
    _, _, tm = tiny
    first = LLMEngine(tm.model, tm.tokenizer, max_batch=1)
    LLMEngine(tm.model, tm.tokenizer, max_batch=1)
    with pytest.raises(RuntimeError, match="another engine"):
        first.generate(PROMPTS[0], SamplingParams(max_tokens=2))


def test_chat_stops_at_end_of_turn(stored):
    gen = puhui.load(stored)
    im_end = gen.tokenizer.token_to_id("<|im_end|>")
    r = gen.chat("Hi", max_tokens=4, temperature=0, logit_bias={im_end: 100})
    assert r.tokens == [im_end] and r.finish_reason == "stop" and r.text == ""
    raw = gen.generate("Hi", max_tokens=4, temperature=0, logit_bias={im_end: 100})
    assert raw.tokens == [im_end] * 4   # a plain completion stops at eos only


def test_unknown_model_and_unsupported(home, tmp_path):
    with pytest.raises(puhui.ModelNotFound):
        puhui.load("no-such-model")
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}))
    with pytest.raises(Unsupported, match="t5"):
        load_causal_lm(folder)


def test_embedder_matches_transformers(home, tmp_path):
    """A tiny BERT in the sentence-transformers layout: mean pooling + normalisation as transformers gives."""
    path = tmp_path / "tiny-bert"
    path.mkdir()
    vocab = save_tokenizer(path)
    torch.manual_seed(0)
    hf = transformers.BertModel(transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                                                        num_attention_heads=4, intermediate_size=64,
                                                        max_position_embeddings=64), add_pooling_layer=False)
    hf.config._attn_implementation = "eager"
    hf.eval().save_pretrained(path, safe_serialization=True)
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                "pooling_mode_mean_tokens": True}))
    (path / "modules.json").write_text(json.dumps([{"type": "sentence_transformers.models.Pooling"},
                                                   {"type": "sentence_transformers.models.Normalize"}]))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16}))
    store.import_path(path, "tiny-bert")
    emb = puhui.load("tiny-bert")
    texts = ["Hello world", "The quick brown fox jumps over the lazy dog, all day long, in the sun.", "a"]
    got = emb.embed(texts)
    assert got.shape == (3, 32) and got.dtype == np.float32
    for text, vec in zip(texts, got):
        ids = emb.tokenizer.encode(text)[:16]
        with torch.no_grad():
            h = hf(torch.tensor([ids])).last_hidden_state[0]
        ref = torch.nn.functional.normalize(h.mean(0), dim=-1).numpy()
        assert float(np.dot(vec, ref)) >= 0.9999
    assert emb.count_tokens(texts)[1] == 16
    assert emb.embed("Hello world").shape == (1, 32)
