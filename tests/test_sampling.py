"""engine/sampling.py, engine/stops.py, engine/detok.py: fast, no model, no network."""
import json

import pytest
import torch

from puhui.errors import BadInput
from puhui.engine.detok import IncrementalDecoder
from puhui.engine.sampling import (
    SamplingParams, TokenCounts, apply_penalties, make_generator, sample, token_logprobs, truncate,
)
from puhui.engine.stops import StopChecker


def kept(x: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(row > float("-inf")).flatten().tolist()) for row in x]


def log(probs) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float32).log()


# ---------------------------------------------------------------- SamplingParams


BAD_VALUES = [
    ("max_tokens", 0, ">= 1"), ("max_tokens", -5, ">= 1"), ("max_tokens", 2.5, "integer"),
    ("temperature", -0.1, ">= 0"), ("temperature", float("nan"), ">= 0"),
    ("top_k", -1, ">= 0"), ("top_p", 0, "(0, 1]"), ("top_p", 1.5, "(0, 1]"),
    ("min_p", -0.1, "[0, 1]"), ("min_p", 2, "[0, 1]"), ("repetition_penalty", 0, "> 0"),
    ("presence_penalty", 2.5, "[-2, 2]"), ("frequency_penalty", -3, "[-2, 2]"),
    ("logit_bias", {5: 101}, "[-100, 100]"), ("logit_bias", {-1: 1}, "token ids"),
    ("logit_bias", {"x": 1}, "token ids"), ("stop", ["ok", ""], "non-empty"),
    ("stop_token_ids", [3, -1], ">= 0"), ("seed", "7", "integer"), ("n", 0, ">= 1"),
    ("logprobs", 21, "[0, 20]"), ("logprobs", -1, "[0, 20]"), ("echo", 1, "true or false"),
    ("temperature", True, ">= 0"),
]
# every other checked field, once more by its param (the values themselves are the wording test's)
MORE_BAD_VALUES = [
    ("repetition_penalty", float("inf")), ("logit_bias", [1, 2]), ("logit_bias", {1: "x"}), ("stop", [3]),
    ("stop_token_ids", ["a"]), ("seed", 1.5), ("n", True), ("ignore_eos", "yes"), ("json_mode", 0),
    ("top_k", 1.5), ("top_p", None), ("min_p", "0.1"), ("presence_penalty", float("nan")),
    ("frequency_penalty", 2.5), ("max_tokens", None), ("logprobs", 1.0), ("structure", {"type": "object"}),
]


@pytest.mark.parametrize("name, value, says", BAD_VALUES)
def test_validation_names_the_parameter(name, value, says):
    with pytest.raises(BadInput) as err:
        SamplingParams(**{name: value})
    assert str(err.value).startswith(name) and says in str(err.value)


@pytest.mark.parametrize("name, value", [(n, v) for n, v, _ in BAD_VALUES] + MORE_BAD_VALUES)
def test_validation_carries_the_parameter(name, value):
    """The doors map an error by its `param`, never by its wording (DESIGN.md)."""
    with pytest.raises(BadInput) as err:
        SamplingParams(**{name: value})
    assert err.value.param == name


def test_every_checked_field_is_covered():
    checked = {n for n, _, _ in BAD_VALUES} | {n for n, _ in MORE_BAD_VALUES}
    assert checked == {f for f in SamplingParams.__dataclass_fields__}


def test_vocabulary_checks_carry_the_parameter():
    from puhui.engine.sampling import apply_logit_bias

    with pytest.raises(BadInput) as err:
        SamplingParams(logit_bias={9: 1.0}).check_vocab(5)
    assert err.value.param == "logit_bias"
    with pytest.raises(BadInput) as err:
        SamplingParams(stop_token_ids=[7]).check_vocab(5)
    assert err.value.param == "stop_token_ids"
    with pytest.raises(BadInput) as err:
        apply_logit_bias(torch.zeros(1, 5), [SamplingParams(logit_bias={9: 1.0})])
    assert err.value.param == "logit_bias"


def test_params_normalise():
    p = SamplingParams(stop="END", stop_token_ids=[2], logit_bias={"7": -100, 3: 2})
    assert p.stop == ("END",) and p.stop_token_ids == (2,)
    assert p.logit_bias == {7: -100.0, 3: 2.0}
    assert SamplingParams(temperature=0).greedy and not SamplingParams().greedy
    assert not SamplingParams().uses_penalties and SamplingParams(presence_penalty=0.5).uses_penalties
    with pytest.raises(BadInput, match="logit_bias"):
        p.check_vocab(5)
    p.check_vocab(8)


# ---------------------------------------------------------------- greedy, temperature, draws


def test_greedy_is_argmax():
    torch.manual_seed(0)
    logits = torch.randn(8, 50)
    out = sample(logits, [SamplingParams(temperature=0)] * 8)
    assert torch.equal(out.tokens, logits.argmax(-1))
    assert out.logprobs is None and out.top_ids is None


def frequencies(tokens: torch.Tensor, V: int) -> torch.Tensor:
    return torch.bincount(tokens, minlength=V).float() / len(tokens)


@pytest.mark.parametrize("params, expected", [
    (SamplingParams(temperature=0.7), torch.softmax(log([0.5, 0.25, 0.15, 0.07, 0.03]) / 0.7, -1)),
    (SamplingParams(temperature=1.0, top_k=2), torch.tensor([0.5, 0.25, 0, 0, 0]) / 0.75),
    (SamplingParams(top_p=0.85), torch.tensor([0.5, 0.25, 0.15, 0, 0]) / 0.9),
    (SamplingParams(min_p=0.2), torch.tensor([0.5, 0.25, 0.15, 0, 0]) / 0.9),
    (SamplingParams(temperature=2.0, top_k=3), torch.softmax(log([0.5, 0.25, 0.15]) / 2, -1).tolist() + [0, 0]),
])
def test_draws_follow_the_distribution(params, expected):
    expected = torch.as_tensor(expected, dtype=torch.float32)
    N = 20000
    logits = log([0.5, 0.25, 0.15, 0.07, 0.03]).expand(N, 5)
    torch.manual_seed(1)
    freq = frequencies(sample(logits, [params] * N).tokens, 5)
    assert torch.allclose(freq, expected, atol=0.015), (freq, expected)
    assert torch.all(freq[expected == 0] == 0)


def test_seeded_draws_follow_the_distribution():
    N, probs = 4000, [0.6, 0.3, 0.1]
    params = SamplingParams(seed=5)
    gens = [make_generator(params.seed, i) for i in range(N)]
    freq = frequencies(sample(log(probs).expand(N, 3), [params] * N, gens).tokens, 3)
    assert torch.allclose(freq, torch.tensor(probs), atol=0.03), freq


def test_same_seed_same_tokens_whatever_the_batch():
    torch.manual_seed(0)
    steps = [torch.randn(4, 1000) for _ in range(20)]
    mine = SamplingParams(temperature=1.0, seed=1234, top_p=0.95)

    def run(batch_of, my_row):
        gens = [make_generator(p.seed) for p in batch_of]
        return [sample(x[: len(batch_of)], batch_of, gens).tokens[my_row].item()
                for x in (s.roll(my_row, 0) for s in steps)]

    alone = run([mine], 0)
    crowded = run([SamplingParams(seed=9), SamplingParams(), mine, SamplingParams(temperature=0)], 2)
    assert alone == crowded
    assert run([mine], 0) == alone
    other = run([SamplingParams(temperature=1.0, seed=4321, top_p=0.95)], 0)
    assert other != alone


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_seeded_sampling_on_the_gpu():
    torch.manual_seed(0)
    steps = [torch.randn(3, 32000, device="cuda") for _ in range(10)]
    mine = SamplingParams(seed=77, top_k=50, top_p=0.9, presence_penalty=0.5, logprobs=2)
    counts = TokenCounts(3, 32000, device="cuda")

    def run(batch_of, my_row):
        gens = [make_generator(p.seed, device="cuda") for p in batch_of]
        counts.start(my_row, [1, 2, 3])
        tokens = []
        for x in steps:
            x = x[: len(batch_of)].roll(my_row, 0)
            out = sample(x, batch_of, gens, *counts.rows(list(range(len(batch_of)))))
            counts.add(list(range(len(batch_of))), out.tokens)
            tokens.append(out.tokens[my_row].item())
        return tokens

    alone = run([mine], 0)
    assert run([SamplingParams(temperature=0), SamplingParams(), mine], 2) == alone


def test_make_generator():
    assert make_generator(None) is None
    a, b = make_generator(7).initial_seed(), make_generator(7, 1).initial_seed()
    assert a == 7 and b == 8 and make_generator(-1).initial_seed() == 2**64 - 1


# ---------------------------------------------------------------- truncation sets


def test_top_k_keeps_ties_at_the_kth():
    x = torch.tensor([[3.0, 1, 2, 2, 0]] * 4)
    assert kept(truncate(x, [1, 2, 3, 99], [1] * 4, [0] * 4)) == [{0}, {0, 2, 3}, {0, 2, 3}, {0, 1, 2, 3, 4}]


def test_top_p_keeps_the_smallest_set_reaching_p():
    x = log([0.5, 0.3, 0.15, 0.05]).expand(5, 4)
    out = truncate(x, [0] * 5, [1e-9, 0.4, 0.7, 0.85, 0.99], [0] * 5)
    assert kept(out) == [{0}, {0}, {0, 1}, {0, 1, 2}, {0, 1, 2, 3}]
    # ties with the last kept token are all kept; order in the vocabulary does not matter
    assert kept(truncate(log([[0.1, 0.25, 0.4, 0.25]]), [0], [0.5], [0])) == [{1, 2, 3}]


def test_top_p_works_on_the_top_k_renormalised_distribution():
    x = log([[0.4, 0.3, 0.2, 0.1]] * 2)
    assert kept(truncate(x, [2, 0], [0.55, 0.55], [0, 0])) == [{0}, {0, 1}]


def test_min_p_is_relative_to_the_top_probability():
    x = log([0.5, 0.3, 0.15, 0.05]).expand(4, 4)
    assert kept(truncate(x, [0] * 4, [1] * 4, [0.0, 0.25, 0.5, 1.0])) == [{0, 1, 2, 3}, {0, 1, 2}, {0, 1}, {0}]
    assert kept(truncate(torch.tensor([[2.0, 1, 2]]), [0], [1], [1.0])) == [{0, 2}]


def test_at_least_one_token_survives():
    x = torch.tensor([[0.0, 5, 1], [7, 7, 7]])
    assert kept(truncate(x, [1, 1], [1e-9, 1e-9], [1.0, 1.0])) == [{1}, {0, 1, 2}]
    out = sample(x, [SamplingParams(top_k=1, top_p=1e-9, min_p=1.0, seed=0)] * 2, [make_generator(0)] * 2)
    assert out.tokens[0] == 1


# ---------------------------------------------------------------- penalties, bias, logprobs


def test_penalties_follow_the_formulas():
    V = 6
    x = torch.tensor([[2.0, -1.0, 0.5, -3.0, 1.0, 0.0]] * 3)
    counts = torch.tensor([[0, 2, 1, 0, 0, 0]] * 3, dtype=torch.int32)
    prompt = torch.tensor([[True, False, False, True, False, False]] * 3)
    params = [SamplingParams(repetition_penalty=1.5),
              SamplingParams(presence_penalty=0.5, frequency_penalty=0.25),
              SamplingParams()]
    out = apply_penalties(x.clone(), params, counts, prompt)
    rep = [2.0 / 1.5, -1.0 * 1.5, 0.5 / 1.5, -3.0 * 1.5, 1.0, 0.0]       # prompt 0, 3; output 1, 2
    oai = [2.0, -1.0 - 0.5 - 0.25 * 2, 0.5 - 0.5 - 0.25, -3.0, 1.0, 0.0]   # generated tokens only
    assert torch.allclose(out[0], torch.tensor(rep))
    assert torch.allclose(out[1], torch.tensor(oai))
    assert torch.equal(out[2], x[2])
    assert out.shape == (3, V)
    with pytest.raises(ValueError):
        apply_penalties(x.clone(), params, None, None)


def test_token_counts_feed_sample():
    counts = TokenCounts(num_slots=4, vocab_size=5)
    counts.start(2, [0, 0, 3])
    counts.add([2, 2], [1, 1])
    counts.add([2], [4])
    output, prompt = counts.rows([2])
    assert output.tolist() == [[0, 2, 0, 0, 1]] and prompt.tolist() == [[True, False, False, True, False]]
    counts.start(2, [1])
    assert counts.output[2].sum() == 0 and counts.prompt[2].tolist() == [False, True, False, False, False]
    # a strong frequency penalty moves greedy away from the repeated token
    counts.add([2] * 3, [1] * 3)
    p = SamplingParams(temperature=0, frequency_penalty=2.0)
    out = sample(torch.tensor([[0.0, 5.0, 0.5, 0.0, 0.0]]), [p], None, *counts.rows([2]))
    assert out.tokens.item() == 2


def test_logit_bias_bans_and_forces():
    x = torch.tensor([[0.0, 1.0, 2.0, 10.0]]).expand(2000, 4)
    ban = SamplingParams(temperature=1.0, logit_bias={3: -100})
    torch.manual_seed(0)
    assert 3 not in sample(x, [ban] * 2000).tokens.tolist()
    assert sample(x[:1], [SamplingParams(temperature=0, logit_bias={3: -100})]).tokens.item() == 2
    force = SamplingParams(temperature=1.0, logit_bias={0: 100})
    assert set(sample(x, [force] * 2000).tokens.tolist()) == {0}
    with pytest.raises(BadInput, match="logit_bias"):
        sample(x[:1], [SamplingParams(logit_bias={4: 1})])


def test_logprobs_are_after_penalties_and_bias_before_temperature():
    torch.manual_seed(0)
    x = torch.randn(3, 30)
    params = [SamplingParams(temperature=0.3, top_k=3, logit_bias={5: 3.0}, logprobs=4, seed=1),
              SamplingParams(temperature=0, logprobs=0),
              SamplingParams()]
    out = sample(x, params, [make_generator(p.seed) for p in params])
    biased = x.clone()
    biased[0, 5] += 3.0
    lp = torch.log_softmax(biased, -1)
    assert torch.allclose(out.logprobs, lp.gather(-1, out.tokens[:, None]).squeeze(-1))
    assert out.top_ids.shape == (3, 4)
    assert torch.equal(out.top_ids[0], lp[0].topk(4).indices)
    assert torch.allclose(out.top_logprobs[0], lp[0].topk(4).values)
    assert out.tokens[0].item() in lp[0].topk(3).indices.tolist()
    chosen, ids, top = token_logprobs(x, torch.tensor([1, 2, 3]), 0)
    assert ids.shape == (3, 0) and torch.allclose(chosen, torch.log_softmax(x, -1)[[0, 1, 2], [1, 2, 3]])


# ---------------------------------------------------------------- stop strings


def feed_all(checker: StopChecker, pieces) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, stopped = checker.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + checker.flush(), False


def test_stop_straddling_pieces():
    checker = StopChecker(["END"])
    assert checker.feed("abc E") == ("abc ", False)
    assert checker.feed("N") == ("", False)
    assert checker.feed("D and more") == ("", True)
    assert checker.matched == "END" and checker.feed("x") == ("", True)


def test_held_partial_is_released_when_it_is_not_a_stop():
    checker = StopChecker(["END"])
    assert checker.feed("E") == ("", False)
    assert checker.feed("N") == ("", False)
    assert checker.feed("x") == ("ENx", False)
    assert checker.feed("EN") == ("", False)
    assert checker.flush() == "EN"


def test_multiple_stops_earliest_wins():
    assert feed_all(StopChecker(["###", "\n\n", "User:"]), ["Hi", " there\n", "\nUser:", " x"]) == ("Hi there", True)
    checker = StopChecker(["ab", "b"])
    assert checker.feed("xa") == ("x", False) and checker.feed("b") == ("", True) and checker.matched == "ab"
    # a stop inside one piece, text before it kept
    assert feed_all(StopChecker(["STOP"]), ["one STOP two"]) == ("one ", True)


def test_overlapping_prefixes_hold_the_longest():
    checker = StopChecker(["aab"])
    assert checker.feed("xaa") == ("x", False)
    assert checker.feed("a") == ("a", False)      # "aaa": only "aa" can still start "aab"
    assert checker.feed("b") == ("", True)


def test_no_stops_pass_through():
    checker = StopChecker([])
    assert checker.feed("anything") == ("anything", False) and checker.flush() == ""


@pytest.mark.parametrize("split", range(1, 12))
def test_stop_found_at_every_split(split):
    text = "hello<|im_end|>bye"
    pieces = [text[i:i + split] for i in range(0, len(text), split)]
    assert feed_all(StopChecker(["<|im_end|>"]), pieces) == ("hello", True)
    assert feed_all(StopChecker(["<|nope|>"]), pieces) == (text, False)


# ---------------------------------------------------------------- incremental detokenisation

TEXT = ("Hello world, 你好世界！ The café serves 🍕🍕 and 🤖 robots. 中文 and emoji 👍🏽 mix; "
        "naïve résumé — done. 日本語のテキストも少し。")


def byte_level_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT, "你好 世界 你好世界 中文 中文", "hello world " * 5], trainer=trainer)
    return tok


def metaspace_tokenizer(byte_fallback: bool):
    """A SentencePiece-like BPE: '▁' for spaces; with byte_fallback, Llama's <0xXX> tokens and decoders."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "</s>"], show_progress=False)
    corpus = ["Hello world, the café serves pizza and robots.", "naïve résumé — done.", "hello hello world"]
    tok.train_from_iterator(corpus if byte_fallback else corpus + [TEXT], trainer=trainer)
    if not byte_fallback:
        return tok
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return Tokenizer.from_str(json.dumps(spec))


def stream(tok, ids, prompt_ids=(), skip_special_tokens=True) -> list[str]:
    decoder = IncrementalDecoder(tok, prompt_ids, skip_special_tokens=skip_special_tokens)
    deltas = [decoder.push(i) for i in ids]
    return deltas + [decoder.flush()]


def assert_clean(deltas):
    for d in deltas:
        assert "\ufffd" not in d
        d.encode("utf-8")       # no lone surrogate halves either


@pytest.mark.parametrize("vocab_size", [260, 300, 360])   # 360 has " na\xc3" + "\xafve" (naïve)
def test_byte_level_deltas_join_to_the_decode(vocab_size):
    tok = byte_level_tokenizer(vocab_size)
    ids = tok.encode(TEXT).ids
    pieces = [tok.decode([i]) for i in ids]
    assert any("\ufffd" in p for p in pieces), "the test needs characters split across tokens"
    deltas = stream(tok, ids)
    assert "".join(deltas) == tok.decode(ids) == TEXT
    assert_clean(deltas)


def test_byte_level_special_tokens():
    tok = byte_level_tokenizer(300)
    end = tok.token_to_id("<|end|>")
    ids = tok.encode("你好").ids + [end] + tok.encode(" 🤖 ok").ids
    assert "".join(stream(tok, ids)) == tok.decode(ids) == "你好 🤖 ok"
    kept_special = "".join(stream(tok, ids, skip_special_tokens=False))
    assert kept_special == tok.decode(ids, skip_special_tokens=False) == "你好<|end|> 🤖 ok"


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_metaspace_deltas_join_to_the_decode(byte_fallback):
    tok = metaspace_tokenizer(byte_fallback)
    ids = tok.encode(TEXT).ids
    if byte_fallback:
        assert any(tok.id_to_token(i).startswith("<0x") for i in ids)
    deltas = stream(tok, ids)
    assert "".join(deltas) == tok.decode(ids) == TEXT
    assert_clean(deltas)
    # one token at a time would lose the spaces: the window keeps them
    assert "".join(tok.decode([i]) for i in ids) != TEXT


@pytest.mark.parametrize("byte_fallback", [False, True])
def test_metaspace_first_generated_token_keeps_its_space(byte_fallback):
    tok = metaspace_tokenizer(byte_fallback)
    prompt = tok.encode("Hello").ids
    generated = tok.encode("Hello world 🤖 café", add_special_tokens=False).ids[len(prompt):]
    text = "".join(stream(tok, generated, prompt_ids=prompt))
    assert text == " world 🤖 café"
    assert "".join(stream(tok, generated)) == tok.decode(generated) == "world 🤖 café"


def test_incomplete_character_at_the_end_is_flushed():
    tok = byte_level_tokenizer(260)
    ids = tok.encode("ok 🤖").ids
    decoder = IncrementalDecoder(tok)
    deltas = [decoder.push(i) for i in ids[:-1]]
    assert "".join(deltas) == "ok "
    # a bare `tokenizers.Tokenizer` does not tell its tokens' bytes: the U+FFFD stays (puhui's Tokenizer: below)
    assert decoder.flush() == tok.decode(ids[:-1])[len("ok "):]   # U+FFFD: the model stopped mid-character


def byte_tokenizer():
    """puhui's Tokenizer over a byte-level BPE whose vocabulary is the 256 bytes alone (spelt in GPT-2's
    alphabet), token id = the byte: any byte string is a list of hand-made tokens."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    from puhui.text.tokenizer import Tokenizer, byte_alphabet

    alphabet = byte_alphabet()                       # byte -> its character
    vocab = {alphabet[b]: b for b in range(256)}
    backend = Backend(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return Tokenizer(backend)


def complete_prefix(raw: bytes) -> str:
    """The text of `raw`, valid UTF-8 cut anywhere, less its incomplete last character."""
    for cut in range(4):
        try:
            return raw[:len(raw) - cut].decode()
        except UnicodeDecodeError:
            continue
    raise AssertionError(raw)


def decode_stream(tok, raw: bytes, **kw) -> tuple[list[str], str]:
    decoder = IncrementalDecoder(tok, **kw)
    deltas = [decoder.push(b) for b in raw]
    return deltas, decoder.flush()


@pytest.mark.parametrize("cut", range(1, 13))
def test_an_incomplete_last_character_is_dropped_not_replaced(cut):
    tok = byte_tokenizer()
    raw = "🙂🎉🚀".encode()[:cut]                      # 4 bytes each: cut inside every one of them
    deltas, tail = decode_stream(tok, raw)
    assert tok.decode(list(raw)).endswith("\ufffd") == (cut % 4 != 0)   # what was shown before
    complete = raw[:len(raw) - len(raw) % 4].decode()
    assert "".join(deltas) + tail == complete
    assert "\ufffd" not in "".join(deltas) + tail


def test_a_cut_after_text_in_one_token_keeps_the_text():
    """A byte-level BPE token can hold the end of one character and the start of the next (' \\xf0'):
    its complete bytes stay."""
    from puhui.text.tokenizer import Tokenizer

    backend = byte_level_tokenizer(360)
    tok = Tokenizer(backend)
    mixed = 0
    for text in ("ok 🤖", "na\u00efve 🍕🍕", "你好世界"):
        ids = backend.encode(text).ids
        for k in range(1, len(ids) + 1):
            raw = b"".join(tok.token_bytes()[i] for i in ids[:k])
            decoder = IncrementalDecoder(tok)
            shown = "".join(decoder.push(i) for i in ids[:k]) + decoder.flush()
            assert shown == complete_prefix(raw) and "\ufffd" not in shown, (text, k, shown)
            last = tok.token_bytes()[ids[k - 1]]
            mixed += len(complete_prefix(raw).encode()) > len(raw) - len(last)   # the cut token kept some text
    assert mixed, "the test needs a token holding the end of a character and the start of the next"


def test_a_replacement_character_the_model_wrote_is_kept():
    tok = byte_tokenizer()
    for raw, shown in (("ok \ufffd".encode(), "ok \ufffd"), ("\ufffd".encode(), "\ufffd"),
                       ("a\ufffd🙂".encode()[:-1], "a\ufffd")):
        deltas, tail = decode_stream(tok, raw)
        assert "".join(deltas) + tail == shown
    # invalid bytes no continuation could complete (a lone continuation byte, an impossible lead) are shown
    for raw in (b"ok \x80", b"ok \xff", b"ok \xed\xa0"):
        deltas, tail = decode_stream(tok, raw)
        assert ("".join(deltas) + tail).endswith("\ufffd"), raw


def test_byte_fallback_tokens_cut_inside_a_character():
    """SentencePiece's <0xNN> tokens: a run of bytes that is not valid UTF-8 decodes to one U+FFFD a byte; the
    complete characters before the cut come back."""
    from puhui.text.tokenizer import Tokenizer

    backend = metaspace_tokenizer(byte_fallback=True)
    tok = Tokenizer(backend)
    ids = backend.encode("Hello 你好🤖").ids
    assert any(backend.id_to_token(i).startswith("<0x") for i in ids)
    for k in range(1, len(ids) + 1):
        decoder = IncrementalDecoder(tok)
        shown = "".join(decoder.push(i) for i in ids[:k]) + decoder.flush()
        assert "\ufffd" not in shown and "Hello 你好🤖".startswith(shown), (k, shown)
    decoder = IncrementalDecoder(tok)
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == "Hello 你好🤖"
