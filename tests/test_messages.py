"""What the errors say, and what a cut text shows: each message names the actual problem and the parameter, with a
stable code; a client's string is quoted cut to a sane length; a text never ends in a U+FFFD that stands for a
character max_tokens (or a stop) cut in two (IncrementalDecoder's own tests, on hand-made byte tokens, are in
test_sampling.py). The first tests need no model; the rest run the packaged SmolLM2 and MiniLM, through the
Python API and a live server."""
from __future__ import annotations

import json
import math

import pytest

from puhui.engine.llm_engine import check_context
from puhui.errors import TooLong
from puhui.serve.errors import _unparsed_body, from_puhui, quoted, validation_error
from puhui.serve.schemas import ChatCompletionRequest, CompletionRequest
from test_sampling import complete_prefix

EMOJI = "Reply with only emoji: 🙂🎉🚀"
NON_FINITE = (float("nan"), float("inf"), float("-inf"))


# ---------------------------------------------------------------- no model


def test_the_empty_body_says_it_is_empty():
    err = validation_error([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    assert "None" not in err.message and "empty" in err.message
    assert err.code == "invalid_json" and err.param is None


@pytest.mark.parametrize("model", [ChatCompletionRequest, CompletionRequest])
def test_every_float_field_refuses_nan_and_infinity_by_name(model):
    from pydantic import ValidationError

    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]} if model is ChatCompletionRequest else \
        {"model": "m", "prompt": "x"}
    floats = [name for name, f in model.model_fields.items() if "float" in str(f.annotation)
              and "dict" not in str(f.annotation)]
    assert {"temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p",
            "repetition_penalty"} <= set(floats)
    for name in floats:
        for value in NON_FINITE:
            with pytest.raises(ValidationError) as e:
                model.model_validate({**base, name: value})
            err = validation_error(e.value.errors())
            assert err.param == name and err.code == "invalid_value", err.message
            assert "finite number" in err.message and "less than" not in err.message
            assert ("NaN" if math.isnan(value) else "Infinity") in err.message
    with pytest.raises(ValidationError) as e:
        model.model_validate({**base, "logit_bias": {"5": float("nan")}})
    err = validation_error(e.value.errors())
    assert err.param.startswith("logit_bias") and "finite number" in err.message


def test_a_form_field_of_nan_is_named_too():
    """Form fields (audio, vision) come as text: 'nan' fails a bound as NaN does."""
    err = validation_error([{"type": "less_than_equal", "loc": ("body", "temperature"), "input": "nan",
                             "msg": "Input should be less than or equal to 1", "ctx": {"le": 1}}])
    assert err.param == "temperature" and "NaN is not a finite number" in err.message


def test_a_body_that_is_not_utf8_or_too_deep_says_so():
    try:
        json.loads(b'{"model": "\xff"}')
    except UnicodeDecodeError as e:
        err = _unparsed_body(e)
    assert err.code == "invalid_json" and "UTF-8" in err.message and "0xff" in err.message
    err = _unparsed_body(RecursionError("maximum recursion depth exceeded"))
    assert err.code == "invalid_json" and "nested too deeply" in err.message
    assert _unparsed_body(ValueError("something else")) is None


def test_context_overflow_is_context_length_exceeded():
    for prompt, max_tokens, param in ((10, 20, "max_tokens"), (40, 1, "prompt")):
        with pytest.raises(TooLong) as e:
            check_context(prompt, max_tokens, 25)
        assert e.value.param == param
        err = from_puhui(e.value)
        assert (err.status, err.code, err.param) == (400, "context_length_exceeded", param)
    check_context(10, 15, 25)


def test_quoted_strings_are_cut():
    assert quoted("gpt-4") == "'gpt-4'"
    long = quoted("x" * 900_000)
    assert len(long) < 200 and "900000 characters" in long and long.startswith("'xxx")
    assert len(from_puhui(TooLong("y" * 10**6)).message) < 3000


def test_the_document_states_what_is_refused():
    from puhui.serve import create_app

    spec = create_app([], aliases={}).openapi()["components"]["schemas"]
    emb = spec["EmbeddingRequest"]["properties"]
    assert "model's own dimension" in emb["dimensions"]["description"]
    branches = emb["input"]["anyOf"]
    assert {"type": "string", "minLength": 1} in branches
    assert all(b.get("items", {}).get("type") != "integer" for b in branches)   # token ids are refused
    assert [b["maxItems"] for b in branches if b["type"] == "array"] == [2048]
    for legacy in ("LegacyEmbeddingRequest", "LegacyCompletionRequest", "LegacyChatCompletionRequest"):
        assert "same name as the engine" in spec[legacy]["properties"]["model"]["description"]
    assert all(b.get("minItems") == 1 for b in spec["CompletionRequest"]["properties"]["prompt"]["anyOf"]
               if b["type"] == "array")
    assert {"type": "string", "minLength": 1} in spec["ChatCompletionRequest"]["properties"]["stop"]["anyOf"]
    assert "dimensions" in spec["ModelCard"]["properties"]


# ---------------------------------------------------------------- the real models


@pytest.fixture(scope="module")
def models():
    from serve_support import need_models, real_models

    need_models()
    return real_models()


@pytest.fixture(scope="module")
def http(models, api_answers):
    httpx = pytest.importorskip("httpx")
    from serve_support import LiveServer

    from puhui.serve import create_app

    with LiveServer(create_app(list(models))) as url:
        with httpx.Client(base_url=url, timeout=120) as c:
            yield c


@pytest.fixture(scope="module")
def api_answers(models):
    """llm.chat(EMOJI) with max_tokens 1..8, greedy: asked before the server starts (its worker then steps the
    same engine)."""
    gen, _ = models
    return {m: gen.chat(EMOJI, max_tokens=m, temperature=0) for m in range(1, 9)}


@pytest.mark.slow
def test_emoji_cut_by_max_tokens_through_the_python_api(models, api_answers):
    gen, _ = models
    cut_inside = 0
    for m, r in api_answers.items():
        assert "\ufffd" not in r.text, (m, r.text)
        assert r.usage.completion_tokens == len(r.tokens) <= m          # the cut character's tokens count
        assert r.text == complete_prefix(b"".join(gen.tokenizer.token_bytes()[t] or b"" for t in r.tokens))
        cut_inside += gen.tokenizer.decode(r.tokens).endswith("\ufffd")
    assert cut_inside >= 3, "the test needs answers cut inside a character"


@pytest.mark.slow
def test_emoji_cut_by_max_tokens_through_the_server(http, api_answers):
    from serve_support import SMOL, sse_events

    for m, api in api_answers.items():
        body = {"model": SMOL, "messages": [{"role": "user", "content": EMOJI}], "max_tokens": m, "temperature": 0}
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        text = answer["choices"][0]["message"]["content"]
        assert "\ufffd" not in text and text == api.text
        assert answer["usage"]["completion_tokens"] == api.usage.completion_tokens
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
            deltas = [c["delta"].get("content") or "" for e in sse_events(s) for c in e["choices"]]
        assert "".join(deltas) == text and not any("\ufffd" in d for d in deltas), (m, deltas)
        r = http.post("/v1/completions", json={"model": SMOL, "prompt": EMOJI, "max_tokens": m, "temperature": 0})
        assert r.status_code == 200 and "\ufffd" not in r.json()["choices"][0]["text"], r.text


def error_of(r, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


JSON = {"Content-Type": "application/json"}


@pytest.mark.slow
def test_bodies_that_are_not_json_say_what_is_wrong(http):
    for raw, says in ((b"", "empty"), (b'{"model": "\xff\xfe"}', "UTF-8"), (b"[" * 60_000, "nested too deeply"),
                      (b"[" * 5000 + b"]" * 5000, "nested too deeply"), (b"{", "parse")):
        err = error_of(http.post("/v1/chat/completions", content=raw, headers=JSON), 400)
        assert err["code"] == "invalid_json" and says in err["message"], (raw[:20], err)
        assert "None" not in err["message"] and "There was an error parsing the body" not in err["message"]


@pytest.mark.slow
def test_nan_and_infinity_are_named_for_every_float_field(http):
    from serve_support import SMOL

    chat = {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    completion = {"model": SMOL, "prompt": "Hi", "max_tokens": 1}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p", "repetition_penalty"):
        for value in NON_FINITE:
            for path, body in (("/v1/chat/completions", chat), ("/v1/completions", completion)):
                raw = json.dumps({**body, name: value}).encode()     # NaN, Infinity, -Infinity
                err = error_of(http.post(path, content=raw, headers=JSON), 400)
                assert err["param"] == name and err["code"] == "invalid_value", err
                assert "finite number" in err["message"] and "than" not in err["message"], err
    raw = json.dumps({**chat, "logit_bias": {"5": float("nan")}}).encode()
    err = error_of(http.post("/v1/chat/completions", content=raw, headers=JSON), 400)
    assert err["param"].startswith("logit_bias") and "finite number" in err["message"]


@pytest.mark.slow
def test_context_overflow_has_openais_code(http, models):
    from serve_support import SMOL

    gen, _ = models
    chat = {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}]}
    long = "word " * (gen.context_length + 10)
    for path, body, param in (("/v1/chat/completions", {**chat, "max_tokens": 10**6}, "max_tokens"),
                              ("/v1/completions", {"model": SMOL, "prompt": "Hi", "max_tokens": 10**6}, "max_tokens"),
                              ("/v1/completions", {"model": SMOL, "prompt": long}, "prompt"),
                              ("/v1/chat/completions", {**chat, "messages": [{"role": "user", "content": long}]},
                               "messages"),
                              ("/v1/embeddings", {"model": "all-minilm-l6-v2", "input": long}, "input")):
        err = error_of(http.post(path, json=body), 400)
        assert (err["code"], err["param"]) == ("context_length_exceeded", param), (path, err)


@pytest.mark.slow
def test_wrong_task_takes_the_right_article(http):
    from serve_support import MINILM, SMOL

    err = error_of(http.post("/v1/embeddings", json={"model": SMOL, "input": "x"}), 400)
    assert "is a text-generation model" in err["message"] and "needs an embeddings model" in err["message"]
    err = error_of(http.post("/v1/chat/completions", json={"model": MINILM, "messages": [
        {"role": "user", "content": "x"}]}), 400)
    assert "is an embeddings model" in err["message"] and "needs a text-generation model" in err["message"]


@pytest.mark.slow
def test_long_client_strings_are_cut_in_messages(http):
    from serve_support import SMOL

    name = "m" * 900_000
    for path, body in (("/v1/chat/completions", {"model": name, "messages": [{"role": "user", "content": "x"}]}),
                       ("/v1/embeddings", {"model": name, "input": "x"}),
                       (f"/v1/engines/{SMOL}/completions", {"model": name, "prompt": "x"})):
        r = http.post(path, json=body)
        assert r.status_code in (400, 404) and len(r.content) < 2000, (path, len(r.content))
        assert "900000 characters" in r.json()["error"]["message"]
    r = http.post("/v1/completions", json={"model": SMOL, "prompt": "x", "k" * 500_000: 1})
    err = error_of(r, 400)
    assert err["code"] == "unknown_parameter" and len(r.content) < 2000
    r = http.post("/v1/chat/completions", json={"model": SMOL, "messages": [
        {"role": "user", "content": [{"type": "t" * 500_000, "text": "x"}]}]})
    assert error_of(r, 400) and len(r.content) < 2000
    r = http.post("/v1/chat/completions", json={"model": SMOL, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "x", "q" * 500_000: 1}]}]})
    assert error_of(r, 400)["code"] == "unknown_parameter" and len(r.content) < 2000
    assert len(http.get("/v1/" + "p" * 8000).content) < 2000


@pytest.mark.slow
def test_an_empty_embedding_input_is_refused(http):
    from serve_support import MINILM

    err = error_of(http.post("/v1/embeddings", json={"model": MINILM, "input": ""}), 400)
    assert err["param"] == "input" and "empty" in err["message"]
    err = error_of(http.post("/v1/embeddings", json={"model": MINILM, "input": ["ok", ""]}), 400)
    assert err["param"] == "input" and "input[1]" in err["message"]
    assert http.post("/v1/embeddings", json={"model": MINILM, "input": ["ok", " "]}).status_code == 200


@pytest.mark.slow
def test_dimensions_accepts_the_models_own_and_names_it(http, models):
    from serve_support import MINILM

    _, emb = models
    card = http.get(f"/v1/models/{MINILM}").json()
    assert card["dimensions"] == emb.dim
    ok = http.post("/v1/embeddings", json={"model": MINILM, "input": "a", "dimensions": emb.dim})
    assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == emb.dim
    err = error_of(http.post("/v1/embeddings", json={"model": MINILM, "input": "a", "dimensions": 64}), 400)
    assert (err["param"], err["code"]) == ("dimensions", "unsupported_value") and str(emb.dim) in err["message"]


@pytest.mark.slow
def test_legacy_routes_answer_an_unknown_engine_first(http):
    from serve_support import SMOL

    body = {"prompt": "Hi", "max_tokens": 1}
    assert http.post(f"/v1/engines/{SMOL}/completions", json={**body, "model": SMOL}).status_code == 200
    err = error_of(http.post(f"/v1/engines/{SMOL}/completions", json={**body, "model": "all-minilm-l6-v2"}), 400)
    assert err["param"] == "model" and "engine" in err["message"]
    # an engine that is not served is a 404, whatever the body says (it was a 400 about the body's model)
    for model in ("other", None):
        err = error_of(http.post("/v1/engines/no-such-engine/completions", json={**body, "model": model}), 404)
        assert err["code"] == "model_not_found"
