"""The server with the official `openai` client, as users' code talks to it: a live uvicorn on a free port
serving the packaged real models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2)."""
from __future__ import annotations

import time

import numpy as np
import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from serve_support import MINILM, SMOL, LiveServer, need_models, real_models, sse_events  # noqa: E402

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = dict(temperature=0)


@pytest.fixture(scope="module")
def models():
    need_models()
    return real_models()


@pytest.fixture(scope="module")
def url(models):
    from puhui.serve import create_app

    with LiveServer(create_app(list(models), max_queue=64)) as u:
        yield u


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


def test_seed_snippet_runs_unchanged(client):
    """The seed's §6.1 call, in today's client: only the address differs from OpenAI."""
    r = client.completions.create(model="text-davinci-003", prompt="What is the capital of France?", max_tokens=50)
    assert r.object == "text_completion" and r.model == SMOL
    assert len(r.choices) == 1 and isinstance(r.choices[0].text, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 1 <= r.usage.completion_tokens <= 50
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_legacy_engines_route(http, models):
    """openai<1's Completion.create(engine=...) posts to /v1/engines/{engine}/completions without a model."""
    r = http.post("/v1/engines/text-davinci-003/completions",
                  json={"prompt": "The capital of France is", "max_tokens": 4, **GREEDY})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == SMOL and body["choices"][0]["text"]
    r = http.post("/v1/engines/text-davinci-003/completions",
                  json={"model": "gpt-4o-mini", "prompt": "x", "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = http.post("/v1/engines/gpt-3.5-turbo/chat/completions",
                  json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    r = http.post("/v1/engines/text-embedding-ada-002/embeddings", json={"input": "Hi"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == models[1].dim


def test_completion_usage_is_exact(client, models):
    gen, _ = models
    prompt = "The three primary colours are"
    # a chat model answers a completion's prompt as one user turn (issue 15): its tokens are the template's
    r = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=8, **GREEDY)
    assert r.usage.prompt_tokens == len(gen.tokenizer.encode(gen.render(prompt), add_special_tokens=False))
    r = client.completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=8, extra_body={"raw": True},
                                  **GREEDY)
    c = r.choices[0]
    assert r.usage.prompt_tokens == len(gen.tokenizer.encode(prompt))
    if c.finish_reason == "length":
        assert r.usage.completion_tokens == 8
    assert c.text and r.usage.completion_tokens <= 8


def test_chat_knows_paris(client, models):
    gen, _ = models
    r = client.chat.completions.create(model="gpt-3.5-turbo", messages=QUESTION, max_tokens=16, **GREEDY)
    c = r.choices[0]
    assert r.object == "chat.completion" and r.model == SMOL
    assert c.message.role == "assistant" and "Paris" in c.message.content
    assert c.finish_reason == "stop" and "<|im_end|>" not in c.message.content
    prompt_ids = gen.tokenizer.encode(gen.render(QUESTION), add_special_tokens=False)
    assert r.usage.prompt_tokens == len(prompt_ids)
    ids = gen.tokenizer.encode(c.message.content, add_special_tokens=False)
    assert r.usage.completion_tokens in (len(ids), len(ids) + 1)   # + the end-of-turn token that stopped it


def test_chat_stream_joins_to_the_same_answer(client):
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=16, **GREEDY)
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=QUESTION, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}, **GREEDY))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert all(ch.usage is None for ch in chunks[:-1])


def test_chat_json_mode(client, http):
    """response_format json_object: the answer is a JSON object, streamed or not; OpenAI's own rules refuse
    what it would refuse."""
    import json

    ask = [{"role": "user", "content": "Give a JSON object with the name and the age of Ann, who is 31."}]
    fmt = {"type": "json_object"}
    r = client.chat.completions.create(model="gpt-4o-mini", messages=ask, max_tokens=96, response_format=fmt, **GREEDY)
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop" and isinstance(json.loads(text), dict), text
    chunks = client.chat.completions.create(model="gpt-4o-mini", messages=ask, max_tokens=96, response_format=fmt,
                                            stream=True, **GREEDY)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == text
    no_json = [{"role": "user", "content": "Tell me about Ann."}]
    bad = http.post("/v1/chat/completions", json={"model": SMOL, "messages": no_json, "response_format": fmt})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages" and "json" in bad.text
    # json_schema is structured outputs now (tests/test_constrained.py); a schema it cannot compile is refused
    for body in ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "format": "nope"}}},
                 {"type": "json_object", "json_schema": {}},
                 {"type": "text", "json_schema": {}}):
        bad = http.post("/v1/chat/completions", json={"model": SMOL, "messages": ask, "response_format": body})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format", body


def test_completion_stream_joins_to_the_same_text(client):
    kw = dict(model="text-davinci-003", prompt="Once upon a time", max_tokens=12, **GREEDY)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_embeddings(client, models):
    _, emb = models
    texts = ["The cat sits on the mat.", "A cat is sitting on a mat.", "Stock markets fell sharply today."]
    r = client.embeddings.create(model="text-embedding-ada-002", input=texts)   # the client asks for base64
    assert r.model == MINILM and [d.index for d in r.data] == [0, 1, 2]
    v = np.array([d.embedding for d in r.data], dtype=np.float32)
    assert v.shape == (3, emb.dim)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(v, emb.embed(texts), atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert r.usage.prompt_tokens == sum(emb.count_tokens(texts)) == r.usage.total_tokens
    f = client.embeddings.create(model="text-embedding-3-small", input="The cat sits on the mat.",
                                 encoding_format="float")
    np.testing.assert_allclose(f.data[0].embedding, v[0], atol=1e-6)


def test_models(client):
    listed = {m.id: m for m in client.models.list().data}
    assert set(listed) == {SMOL, MINILM}                       # real ids, not aliases
    assert "gpt-3.5-turbo" in listed[SMOL].model_extra["aliases"]
    assert client.models.retrieve("gpt-3.5-turbo").id == SMOL
    assert client.models.retrieve(MINILM).id == MINILM
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_n_choices(client):
    r = client.completions.create(model="text-davinci-003", prompt="My favourite fruit is", max_tokens=6, n=2,
                                  temperature=1.0, seed=7)
    assert [c.index for c in r.choices] == [0, 1]
    again = client.completions.create(model="text-davinci-003", prompt="My favourite fruit is", max_tokens=6, n=2,
                                      temperature=1.0, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in r.choices]    # seeded: reproducible
    chat = client.chat.completions.create(model="gpt-3.5-turbo", messages=QUESTION, max_tokens=6, n=2, seed=3)
    assert [c.index for c in chat.choices] == [0, 1]
    assert chat.usage.completion_tokens <= 12


def test_several_prompts_and_token_ids(client, models):
    gen, _ = models
    prompts = ["Hello, my name is", "The weather today is"]
    raw = {"raw": True}   # continued as sent, as token ids always are
    r = client.completions.create(model="text-davinci-003", prompt=prompts, max_tokens=4, n=2, extra_body=raw,
                                  **GREEDY)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text == r.choices[1].text and r.choices[2].text == r.choices[3].text
    assert r.usage.prompt_tokens == sum(len(gen.tokenizer.encode(p)) for p in prompts)
    ids = gen.tokenizer.encode(prompts[0])
    by_ids = client.completions.create(model="text-davinci-003", prompt=ids, max_tokens=4, **GREEDY)
    assert by_ids.choices[0].text == r.choices[0].text


def test_stop(client):
    whole = client.chat.completions.create(model="gpt-3.5-turbo", messages=QUESTION, max_tokens=16, **GREEDY)
    assert "Paris" in whole.choices[0].message.content
    cut = client.chat.completions.create(model="gpt-3.5-turbo", messages=QUESTION, max_tokens=16, stop=["Paris"],
                                         **GREEDY)
    text = cut.choices[0].message.content
    assert "Paris" not in text and whole.choices[0].message.content.startswith(text)
    assert cut.choices[0].finish_reason == "stop"
    one = client.completions.create(model="text-davinci-003", prompt="1, 2, 3, 4,", max_tokens=12, stop=" 7", **GREEDY)
    assert " 7" not in one.choices[0].text


def test_completion_logprobs_and_echo(client):
    prompt = "The capital of France is"
    r = client.completions.create(model="text-davinci-003", prompt=prompt, max_tokens=5, logprobs=3, **GREEDY)
    c = r.choices[0]
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert "".join(lp.tokens) == c.text
    assert lp.text_offset[0] == len(prompt)
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0 and 1 <= len(top) <= 3
        assert max(top.values()) == pytest.approx(logprob, abs=1e-4)    # greedy: the chosen is the likeliest
        assert token in top
    e = client.completions.create(model="text-davinci-003", prompt=prompt, max_tokens=2, logprobs=1, echo=True,
                                  **GREEDY)
    ec = e.choices[0]
    assert ec.text.startswith(prompt)
    assert ec.logprobs.token_logprobs[0] is None and ec.logprobs.text_offset[0] == 0
    assert "".join(ec.logprobs.tokens) == ec.text


def test_chat_logprobs(client):
    r = client.chat.completions.create(model="gpt-3.5-turbo", messages=QUESTION, max_tokens=10, logprobs=True,
                                       top_logprobs=2, **GREEDY)
    c = r.choices[0]
    content = c.logprobs.content
    assert "".join(t.token for t in content) == c.message.content
    assert b"".join(bytes(t.bytes) for t in content).decode() == c.message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob == pytest.approx(t.logprob, abs=1e-4)
    streamed = client.chat.completions.create(model="gpt-3.5-turbo", messages=QUESTION, max_tokens=10,
                                              logprobs=True, top_logprobs=2, stream=True, **GREEDY)
    tokens = [t.token for ch in streamed if ch.choices and ch.choices[0].logprobs
              for t in ch.choices[0].logprobs.content]
    assert tokens == [t.token for t in content]


def test_system_and_history(client):
    messages = [{"role": "system", "content": "You answer in one word."},
                {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
                {"role": "assistant", "content": "Paris."},
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "And of Italy?"}]
    r = client.chat.completions.create(model="gpt-3.5-turbo", messages=messages, max_tokens=8, **GREEDY)
    assert r.choices[0].message.content


def test_health_and_metrics(http, client):
    h = http.get("/health")
    assert h.status_code == 200 and set(h.json()["models"]) == {SMOL, MINILM}
    client.completions.create(model="text-davinci-003", prompt="Hi", max_tokens=2)
    m = http.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    for name in ("puhui_requests_total", "puhui_request_errors_total", "puhui_queue_depth",
                 "puhui_running_sequences", "puhui_generated_tokens_total", "puhui_time_to_first_token_seconds_bucket",
                 "puhui_request_duration_seconds_bucket"):
        assert name in text, name
    assert f'puhui_generated_tokens_total{{model="{SMOL}"}}' in text
    assert 'puhui_requests_total{endpoint="/v1/completions",method="POST",status="200"}' in text


def _running(http) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(f'puhui_running_sequences{{model="{SMOL}"}}'):
            return float(line.split()[-1])
    return 0.0


def test_disconnect_frees_the_slot(url, http):
    """A streaming client that goes away mid-answer: its request is aborted and its slot freed."""
    body = {"model": "text-davinci-003", "prompt": "Write a very long story:", "max_tokens": 900, "stream": True,
            "temperature": 1.0, "seed": 1,
            "logit_bias": {"0": -100, "1": -100, "2": -100}}  # no end-of-text/turn token: it runs until we leave
    with httpx.Client(base_url=url, timeout=60) as c:
        with c.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            deadline = time.monotonic() + 10
            while _running(http) != 1:
                assert time.monotonic() < deadline, "the streaming request never showed as running"
                time.sleep(0.05)
    deadline = time.monotonic() + 10
    while _running(http) != 0:
        assert time.monotonic() < deadline, "the abandoned request still runs"
        time.sleep(0.1)


def test_raw_stream_format(http):
    with http.stream("POST", "/v1/chat/completions",
                     json={"model": "gpt-3.5-turbo", "messages": QUESTION, "max_tokens": 4, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r)
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert len({e["id"] for e in events}) == 1


def test_cli_serve(tmp_path):
    """`puhui serve` loads, prints one ready line with the URL and a curl example, and serves."""
    import os
    import signal
    import subprocess
    import sys

    from serve_support import free_port

    port = free_port()
    env = dict(os.environ, PUHUI_HOME=str(tmp_path / "home"), PUHUI_API_KEYS='["k1"]')
    proc = subprocess.Popen([sys.executable, "-c", "from puhui.cli import main; main()", "serve", "--port", str(port),
                             "--model", "text-embedding-ada-002", "--api-key", "k2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line and "curl" in line, (line, proc.stderr.read() if not line else "")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            # the model names are behind the key (issue 14): /health says only that the server is up without one
            assert c.get("/health").json() == {"status": "ok"}
            assert c.get("/health", headers={"Authorization": "Bearer k1"}).json()["models"] == [MINILM]
            assert c.get("/v1/models").status_code == 401
            for key in ("k1", "k2"):
                r = c.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
                assert [m["id"] for m in r.json()["data"]] == [MINILM]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_cli_serve_refuses_an_open_address_without_a_key(tmp_path):
    from conftest import run_cli

    r = run_cli("serve", "--host", "0.0.0.0", home=tmp_path)
    assert r.returncode == 2 and "--insecure" in r.stderr and "Traceback" not in r.stderr
