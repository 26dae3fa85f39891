"""The server's errors with raw httpx: every 4xx/5xx is OpenAI's error body, naming the parameter at fault;
nothing malformed takes the server down. Keys, the body limit, the queue (429), timeouts (504), a failing
engine (500) and disconnects are checked on small apps over a tiny random model (fast, the real engine)."""
from __future__ import annotations

import json
import logging
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from serve_support import MINILM, SMOL, LiveServer, need_models, real_models, sse_events, tiny_generator  # noqa: E402

pytestmark = pytest.mark.slow

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
COMPLETION = {"model": "text-davinci-003", "prompt": "Hi", "max_tokens": 2}
NO_EOS = {"2": -100}   # SmolLM2's <|im_end|>: the tiny random model must not stop early


@pytest.fixture(scope="module")
def models():
    need_models()
    return real_models()


@pytest.fixture(scope="module")
def http(models):
    from puhui.serve import create_app

    with LiveServer(create_app(list(models), max_body=64 * 1024)) as url:
        with httpx.Client(base_url=url, timeout=60) as c:
            yield c


def error_of(r, status: int, param: str | None = "ANY") -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"]
    if param != "ANY":
        assert err["param"] == param, err
    return err


def test_malformed_json(http):
    for raw in (b"{", b'{"model": "gpt-3.5-turbo", "messages": [}', b"\xff\xfe", b"null", b"[]", b'"text"', b"",
                b"[" * 60_000):
        r = http.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
        err = error_of(r, 400)
        assert err["type"] == "invalid_request_error"
    err = error_of(http.post("/v1/chat/completions", data={"model": "gpt-3.5-turbo"}), 400)   # a form
    assert "Content-Type: application/json" in err["message"]
    # a lone surrogate (a JSON \\ud800 escape) is not text a tokenizer can take
    raw = '{"model": "text-davinci-003", "prompt": "\\ud800", "max_tokens": 1}'.encode()
    error_of(http.post("/v1/completions", content=raw, headers={"Content-Type": "application/json"}), 400, "prompt")


def test_wrong_types_name_the_parameter(http):
    cases = [("temperature", "hot"), ("max_tokens", "10"), ("max_tokens", 1.5), ("n", True), ("stream", "yes"),
             ("stop", 7), ("logit_bias", [1]), ("seed", "x"), ("messages", "Hi")]
    for name, value in cases:
        err = error_of(http.post("/v1/chat/completions", json={**CHAT, name: value}), 400, name)
        assert name in err["message"]
    err = error_of(http.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": 5}]}), 400)
    assert err["param"].startswith("messages[0].content")
    error_of(http.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "robot", "content": "x"}]}),
             400, "messages[0].role")
    error_of(http.post("/v1/completions", json={**COMPLETION, "prompt": {"a": 1}}), 400, "prompt")
    error_of(http.post("/v1/completions", json={**COMPLETION, "prompt": [1, "a"]}), 400, "prompt")
    error_of(http.post("/v1/embeddings", json={"model": MINILM, "input": 3}), 400, "input")


def test_out_of_range_values(http):
    for name, value in (("temperature", -1), ("temperature", 2.5), ("top_p", 0), ("n", 0), ("max_tokens", 0),
                        ("presence_penalty", 3), ("top_logprobs", 21), ("seed", 2**70)):
        error_of(http.post("/v1/chat/completions", json={**CHAT, "logprobs": True, name: value}), 400, name)
    error_of(http.post("/v1/completions", json={**COMPLETION, "logprobs": 21}), 400, "logprobs")
    error_of(http.post("/v1/completions", json={**COMPLETION, "logit_bias": {"99999999": 5}}), 400, "logit_bias")
    error_of(http.post("/v1/completions", json={**COMPLETION, "logit_bias": {"12": 500}}), 400, "logit_bias")
    error_of(http.post("/v1/completions", json={**COMPLETION, "stop": [""]}), 400, "stop")
    error_of(http.post("/v1/completions", json={**COMPLETION, "prompt": [10**9]}), 400, "prompt")
    error_of(http.post("/v1/completions", json={**COMPLETION, "prompt": []}), 400, "prompt")
    error_of(http.post("/v1/completions", json={**COMPLETION, "prompt": "", "raw": True}), 400, "prompt")


# a bad value of every sampling field, whichever layer refuses it (the schema or SamplingParams)
BAD_SAMPLING = [("temperature", -1), ("top_p", 1.5), ("top_k", -1), ("top_k", 1.5),
                ("min_p", 2), ("repetition_penalty", 0), ("presence_penalty", -3), ("frequency_penalty", 3),
                ("seed", 1.5), ("n", 0), ("stop", [""]), ("stop", ["ok", 3]), ("logit_bias", {"12": 500}),
                ("logit_bias", {"x": 1}), ("logit_bias", {"99999999": 5}), ("ignore_eos", "yes")]


@pytest.mark.parametrize("path, body", [("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)])
def test_every_sampling_field_names_itself(http, path, body):
    for name, value in BAD_SAMPLING:
        error_of(http.post(path, json={**body, name: value}), 400, name)
    error_of(http.post(path, json={**body, "max_tokens": 0}), 400, "max_tokens")
    if path == "/v1/completions":
        for name, value in (("logprobs", -1), ("logprobs", 21), ("echo", "yes")):
            error_of(http.post(path, json={**body, name: value}), 400, name)
    else:
        error_of(http.post(path, json={**body, "max_completion_tokens": 0}), 400, "max_completion_tokens")
        error_of(http.post(path, json={**body, "logprobs": True, "top_logprobs": -1}), 400, "top_logprobs")


def test_unknown_model_is_404(http):
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION),
                       ("/v1/embeddings", {"model": "x", "input": "a"})):
        err = error_of(http.post(path, json={**body, "model": "no-such-model"}), 404, "model")
        assert err["code"] == "model_not_found" and "no-such-model" in err["message"]
    error_of(http.get("/v1/models/no-such-model"), 404, "model")
    error_of(http.post("/v1/chat/completions", json={**CHAT, "model": MINILM}), 400, "model")   # wrong task
    error_of(http.post("/v1/embeddings", json={"model": SMOL, "input": "a"}), 400, "model")


def test_unsupported_parameters_are_refused_by_name(http):
    refused = [("/v1/completions", COMPLETION, "suffix", "!"), ("/v1/completions", COMPLETION, "best_of", 3),
               # tools and JSON schemas are implemented now (tests/test_tools.py, test_constrained.py): what is
               # refused is what cannot be used
               ("/v1/chat/completions", CHAT, "tools", "not a list"),
               ("/v1/chat/completions", CHAT, "tool_choice", "auto"),      # without tools
               ("/v1/chat/completions", CHAT, "response_format", {"type": "json_schema", "json_schema": {
                   "name": "x", "schema": {"type": "string", "format": "no-such-format"}}}),
               ("/v1/chat/completions", CHAT, "store", True), ("/v1/chat/completions", CHAT, "audio", {"voice": "x"}),
               ("/v1/embeddings", {"model": MINILM, "input": "a"}, "dimensions", 64),
               ("/v1/embeddings", {"model": MINILM, "input": "a"}, "input", [[1, 2, 3]])]
    for path, body, name, value in refused:
        err = error_of(http.post(path, json={**body, name: value}), 400, name)
        assert name in err["message"]
    # an unknown field: OpenAI's own message
    err = error_of(http.post("/v1/completions", json={**COMPLETION, "frobnicate": 1}), 400, "frobnicate")
    assert err["message"] == "Unrecognized request argument supplied: frobnicate"
    error_of(http.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "tool", "content": "x"}]}),
             400, "messages[0].role")
    error_of(http.post("/v1/chat/completions", json={**CHAT, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]}),
        400, "messages[0].content[0].type")
    error_of(http.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": "x",
                                                                            "name": "bob"}]}), 400, "messages[0].name")
    error_of(http.post("/v1/chat/completions", json={**CHAT, "stream_options": {"include_usage": True}}),
             400, "stream_options")
    error_of(http.post("/v1/chat/completions", json={**CHAT, "top_logprobs": 2}), 400, "top_logprobs")
    # neutral values ask for nothing and are accepted
    ok = http.post("/v1/chat/completions", json={**CHAT, "tools": [], "store": False, "response_format": {"type": "text"},
                                                 "user": "u1", "best_of": None})
    assert ok.status_code == 400 and ok.json()["error"]["param"] == "best_of"   # best_of is not a chat field
    ok = http.post("/v1/chat/completions", json={**CHAT, "tools": [], "store": False, "response_format": {"type": "text"},
                                                 "user": "u1"})
    assert ok.status_code == 200, ok.text
    assert http.post("/v1/completions", json={**COMPLETION, "best_of": 1, "suffix": None}).status_code == 200


def test_oversized_max_tokens_states_both_numbers(http, models):
    gen, _ = models
    window = gen.context_length
    err = error_of(http.post("/v1/completions", json={**COMPLETION, "max_tokens": window}), 400, "max_tokens")
    n = len(gen.tokenizer.encode("Hi"))
    assert str(window) in err["message"] and str(n) in err["message"]
    err = error_of(http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10**6}), 400, "max_tokens")
    assert str(10**6) in err["message"] and str(window) in err["message"]
    long_prompt = "word " * (window + 10)
    err = error_of(http.post("/v1/completions", json={**COMPLETION, "prompt": long_prompt}), 400)
    assert str(window) in err["message"]
    err = error_of(http.post("/v1/chat/completions", json={**CHAT, "messages": [{"role": "user", "content": long_prompt}],
                                                           "max_tokens": None}), 400, "messages")
    assert str(window) in err["message"]
    err = error_of(http.post("/v1/embeddings", json={"model": MINILM, "input": ["ok", "word " * 600]}), 400, "input")
    assert "input[1]" in err["message"]


def test_empty_messages(http):
    error_of(http.post("/v1/chat/completions", json={**CHAT, "messages": []}), 400, "messages")
    error_of(http.post("/v1/chat/completions", json={"model": "gpt-3.5-turbo"}), 400, "messages")
    error_of(http.post("/v1/embeddings", json={"model": MINILM, "input": []}), 400, "input")


def test_oversized_body_is_413(http):
    big = {**COMPLETION, "prompt": "x" * (80 * 1024)}
    err = error_of(http.post("/v1/completions", json=big), 413)
    assert "limit" in err["message"]

    def chunks():   # no Content-Length: counted as it comes
        for _ in range(100):
            yield b" " * 1024
    err = error_of(http.post("/v1/completions", content=chunks(), headers={"Content-Type": "application/json"}), 413)


def test_unknown_routes_and_methods(http):
    error_of(http.get("/v1/nothing-here"), 404)
    error_of(http.get("/v1/completions"), 405)


def test_the_server_is_still_up(http):
    assert http.get("/health").status_code == 200
    r = http.post("/v1/completions", json=COMPLETION)
    assert r.status_code == 200, r.text
    metrics = http.get("/metrics").text
    assert 'puhui_request_errors_total{endpoint="/v1/chat/completions",status="400"}' in metrics
    assert "status=\"5" not in metrics


# ---------------------------------------------------------------------------------------------- keys

def test_api_keys(models, caplog):
    from puhui.serve import create_app

    _, emb = models
    key, other = "sk-puhui-test-key-1", "second-key"
    caplog.set_level(logging.DEBUG)
    with LiveServer(create_app([emb], api_keys=[key, other])) as url, httpx.Client(base_url=url) as c:
        assert c.get("/health").status_code == 200                         # open
        err = error_of(c.get("/v1/models"), 401)
        assert err["type"] == "authentication_error"
        error_of(c.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        error_of(c.get("/v1/models", headers={"Authorization": key}), 401)    # no scheme
        error_of(c.get("/metrics"), 401)
        # the key is checked before the body is read
        error_of(c.post("/v1/chat/completions", content=b"{", headers={"Content-Type": "application/json"}), 401)
        for k in (key, other):
            assert c.get("/v1/models", headers={"Authorization": f"Bearer {k}"}).status_code == 200
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        assert client.embeddings.create(model=MINILM, input="hello").data[0].embedding
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()
    assert key not in caplog.text and "wrong" not in caplog.text


def test_binding_beyond_loopback_needs_a_key():
    from puhui.errors import BadInput
    from puhui.serve import check_bind, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.5.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("")
    check_bind("127.0.0.1", [])
    check_bind("0.0.0.0", ["k"])
    check_bind("0.0.0.0", [], insecure=True)
    with pytest.raises(BadInput, match="--insecure"):
        check_bind("0.0.0.0", [])


# ---------------------------------------------------------------------------------------------- queue, timeout

def _start_stream(url, body, started: threading.Event, result: dict):
    def run():
        with httpx.Client(base_url=url, timeout=60) as c:
            with c.stream("POST", "/v1/completions", json=body) as r:
                result["status"] = r.status_code
                started.set()
                result["events"] = sse_events(r)
    t = threading.Thread(target=run)
    t.start()
    return t


def test_full_queue_is_429_with_retry_after(models):
    from puhui.serve import create_app

    gen = tiny_generator(max_batch=1, context=512)
    with LiveServer(create_app([gen], max_queue=1)) as url, httpx.Client(base_url=url, timeout=60) as c:
        body = {"model": gen.name, "prompt": "Hi", "max_tokens": 200, "stream": True, "temperature": 0,
                "logit_bias": NO_EOS}
        started, result = threading.Event(), {}
        t = _start_stream(url, body, started, result)
        assert started.wait(30) and result["status"] == 200
        # one running, room for one more sequence: n=2 does not fit now, n=3 never
        err = error_of(c.post("/v1/completions", json={**body, "n": 2, "stream": False}), 429)
        assert err["type"] == "rate_limit_error"
        assert int(c.post("/v1/completions", json={**body, "n": 2}).headers["Retry-After"]) >= 1
        error_of(c.post("/v1/completions", json={**body, "n": 3}), 400, "n")
        t.join(60)
        assert result["events"]
        r = c.post("/v1/completions", json={**body, "n": 2, "stream": False, "max_tokens": 3})
        assert r.status_code == 200, r.text
        assert 'puhui_rejected_total{model="tiny-random"} 2.0' in c.get("/metrics").text


def test_request_timeout_is_504(models):
    from puhui.serve import create_app

    gen = tiny_generator(max_batch=2, context=4096)
    with LiveServer(create_app([gen], request_timeout=0.3)) as url, httpx.Client(base_url=url, timeout=60) as c:
        body = {"model": gen.name, "prompt": "Hi", "max_tokens": 4000, "temperature": 0, "logit_bias": NO_EOS}
        err = error_of(c.post("/v1/completions", json=body), 504)
        assert err["type"] == "timeout_error"
        with c.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        assert events[-1]["error"]["type"] == "timeout_error"
        ok = c.post("/v1/completions", json={**body, "max_tokens": 2})
        assert ok.status_code == 200


def test_task_calls_share_the_request_timeout(models):
    """Embeddings, speech, detection and recommendation calls run through TaskWorker.run, which applies the
    server's timeout too: a 504 when it is over."""
    from puhui.serve import create_app

    _, embedder = models
    with LiveServer(create_app([embedder], request_timeout=0.01)) as url, httpx.Client(base_url=url, timeout=60) as c:
        texts = ["a long sentence about rivers, mountains and the sea, " * 20] * 64
        err = error_of(c.post("/v1/embeddings", json={"model": MINILM, "input": texts}), 504)
        assert err["type"] == "timeout_error" and "0.01 s" in err["message"]


def test_failing_engine_is_500_and_the_server_goes_on(models):
    from puhui.serve import create_app

    gen = tiny_generator()
    real_step = gen.engine.step
    calls = {"n": 0}

    def flaky_step():
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated failure")
        return real_step()

    gen.engine.step = flaky_step
    gen.render = lambda messages: 1 / 0      # a bug on the request's side
    with LiveServer(create_app([gen])) as url, httpx.Client(base_url=url, timeout=60) as c:
        # raw: a plain continuation does not render (the render bug below is the chat's)
        err = error_of(c.post("/v1/completions", json={"model": gen.name, "prompt": "Hi", "max_tokens": 3,
                                                       "raw": True}), 500)
        assert err["type"] == "server_error" and "simulated" not in err["message"]
        r = c.post("/v1/completions", json={"model": gen.name, "prompt": "Hi", "max_tokens": 3, "raw": True})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        err = error_of(c.post("/v1/chat/completions", json={"model": gen.name, "max_tokens": 3,
                                                            "messages": [{"role": "user", "content": "Hi"}]}), 500)
        assert "ZeroDivision" not in err["message"]
        assert c.get("/health").status_code == 200            # the same connection goes on


def test_client_gone_before_the_answer_aborts(models):
    """A non-streaming client that gives up: the server notices and frees the slot."""
    from puhui.serve import create_app

    gen = tiny_generator(max_batch=1, context=8192)
    with LiveServer(create_app([gen])) as url:
        with httpx.Client(base_url=url, timeout=0.5) as c:
            with pytest.raises(httpx.TimeoutException):
                c.post("/v1/completions", json={"model": gen.name, "prompt": "Hi", "max_tokens": 8000,
                                                "logit_bias": NO_EOS})
        deadline = time.monotonic() + 5
        while gen.engine.has_unfinished():
            assert time.monotonic() < deadline, "the abandoned request still runs"
            time.sleep(0.05)


def test_ignore_eos_extension_runs_to_max_tokens(http):
    """vLLM's ignore_eos: the answer runs past <|im_end|> / <|endoftext|> to max_tokens (what benchmarks need)."""
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 40,
            "temperature": 0}
    short = http.post("/v1/chat/completions", json=body).json()
    assert short["usage"]["completion_tokens"] < 40 and short["choices"][0]["finish_reason"] == "stop"
    full = http.post("/v1/chat/completions", json={**body, "ignore_eos": True}).json()
    assert full["usage"]["completion_tokens"] == 40 and full["choices"][0]["finish_reason"] == "length"
    error_of(http.post("/v1/chat/completions", json={**body, "ignore_eos": "yes"}), 400, "ignore_eos")
