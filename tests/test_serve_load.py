"""32 streaming clients at once against the real packaged model: each gets its whole, correct answer (the one
the same request gets alone), through continuous batching (16 slots, the rest queued). And a soak: 32 streaming
clients for a minute over a tiny random model, a seeded third of them hanging up mid-answer; then every slot is
free, the next request is answered at once, and the growth of the server's memory is reported."""
from __future__ import annotations

import asyncio
import os
import random
import time

import pytest

openai = pytest.importorskip("openai")

from serve_support import MAX_BATCH, LiveServer, need_models, real_models, rss_mb, tiny_generator  # noqa: E402

pytestmark = pytest.mark.slow

CLIENTS = 32
MAX_TOKENS = 16
QUESTIONS = ["What is the capital of France?", "Name a colour of the rainbow.", "What is 2 + 2?",
             "Say hello in Spanish.", "What do bees make?", "Which planet is the largest?",
             "What is the opposite of cold?", "How many legs does a spider have?"]


@pytest.fixture(scope="module")
def url():
    need_models()
    from puhui.serve import create_app

    with LiveServer(create_app(list(real_models()), max_queue=CLIENTS)) as u:
        yield u


def test_32_concurrent_streams_get_complete_correct_answers(url):
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
    kw = dict(model="gpt-3.5-turbo", max_tokens=MAX_TOKENS, temperature=0)

    async def alone(q):
        r = await client.chat.completions.create(messages=[{"role": "user", "content": q}], **kw)
        return r.choices[0].message.content, r.choices[0].finish_reason, r.usage.model_dump()

    async def streamed(q):
        stream = await client.chat.completions.create(messages=[{"role": "user", "content": q}], stream=True,
                                                      stream_options={"include_usage": True}, **kw)
        text, finish, usage, first = [], None, None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage.model_dump()
            for c in chunk.choices:
                if c.delta.content:
                    first = first or time.monotonic()
                    text.append(c.delta.content)
                finish = c.finish_reason or finish
        return "".join(text), finish, usage

    async def main():
        expected = {}
        for q in QUESTIONS:                       # one at a time: the reference answers
            expected[q] = await alone(q)
        asked = [QUESTIONS[i % len(QUESTIONS)] for i in range(CLIENTS)]
        start = time.monotonic()
        got = await asyncio.gather(*(streamed(q) for q in asked))
        took = time.monotonic() - start
        await client.close()
        return expected, asked, got, took

    expected, asked, got, took = asyncio.run(main())
    assert len(got) == CLIENTS
    for q, answer in zip(asked, got):
        assert answer == expected[q], (q, answer, expected[q])
        assert answer[1] in ("stop", "length") and answer[0]
    print(f"{CLIENTS} streams of <= {MAX_TOKENS} tokens, {MAX_BATCH} slots: {took:.1f} s")


SOAK_S = float(os.environ.get("PUHUI_SOAK_S", "60"))     # the soak's length (shorter to try it out)
SOAK_BATCH = 8
NO_EOS = {"2": -100}   # SmolLM2's <|im_end|>: the tiny random model must not stop early


def test_soak_32_streams_with_disconnects_leaves_every_slot_free():
    """Bounded: SOAK_S seconds (60), 32 clients on 127.0.0.1, max_tokens <= 200. The server runs in this process
    (its engine's counts are read directly), so the RSS reported is the server's and the clients' together."""
    httpx = pytest.importorskip("httpx")
    need_models()
    from puhui.serve import create_app

    gen = tiny_generator(max_batch=SOAK_BATCH, context=512)
    counts = {"complete": 0, "hung_up": 0, "events": 0}
    failures: list = []

    async def client(url, c, i, until):
        rng = random.Random(1400 + i)          # each client's own draws: the same requests and hang-ups each run
        while time.monotonic() < until:
            body = {"model": gen.name, "prompt": f"client {i} says", "max_tokens": rng.randint(8, 200),
                    "stream": True, "temperature": 1.0, "seed": rng.randrange(1 << 30), "logit_bias": NO_EOS}
            leave_after = rng.randint(1, 60) if rng.random() < 1 / 3 else None     # hang up after this many events
            seen, done = 0, False
            async with c.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code != 200:
                    failures.append((r.status_code, (await r.aread())[:200]))
                    return
                async for line in r.aiter_lines():
                    if not line:
                        continue
                    if line == "data: [DONE]":
                        done = True
                        break
                    if '"error"' in line:
                        failures.append(line[:200])
                    seen += 1
                    counts["events"] += 1
                    if leave_after is not None and seen >= leave_after:
                        break          # leaving the block closes the connection mid-answer
            if leave_after is not None and not done:
                counts["hung_up"] += 1
            elif done:
                counts["complete"] += 1
            else:
                failures.append(f"client {i}: the stream ended without [DONE]")

    async def soak(url):
        limits = httpx.Limits(max_connections=CLIENTS + 4)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as c:
            until = time.monotonic() + SOAK_S
            await asyncio.gather(*(client(url, c, i, until) for i in range(CLIENTS)))

    app = create_app([gen], max_queue=CLIENTS)
    worker = app.state.served.workers[gen.name]
    with LiveServer(app) as url:
        warm = httpx.post(f"{url}/v1/completions", json={"model": gen.name, "prompt": "Hi", "max_tokens": 8},
                          timeout=60)
        assert warm.status_code == 200
        before = rss_mb()
        start = time.monotonic()
        asyncio.run(soak(url))
        soaked = time.monotonic() - start
        deadline = time.monotonic() + 10
        while True:
            stats = gen.engine.stats()
            if stats.running == 0 and stats.waiting == 0 and worker.in_flight == 0:
                break
            assert time.monotonic() < deadline, f"slots still held after the soak: {stats}, {worker.in_flight}"
            time.sleep(0.05)
        t0 = time.monotonic()
        r = httpx.post(f"{url}/v1/completions", json={"model": gen.name, "prompt": "Hi", "max_tokens": 16,
                                                       "logit_bias": NO_EOS}, timeout=30)
        answered = time.monotonic() - t0
        after = rss_mb()
    assert not failures, failures[:5]
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 16
    assert answered < 5, answered
    assert counts["complete"] > CLIENTS and counts["hung_up"] > 0, counts
    assert after - before < 1024, (before, after)       # generous: a leak of every request's cache would pass it
    print(f"soak {soaked:.0f} s, {CLIENTS} streaming clients: {counts['complete']} complete, {counts['hung_up']} hung "
          f"up, {counts['events']} events; then all {SOAK_BATCH} slots free, next answer in {answered * 1000:.0f} ms; "
          f"RSS {before:.0f} -> {after:.0f} MiB ({after - before:+.0f} MiB)")
