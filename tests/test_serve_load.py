"""32 streaming clients at once against the real packaged model: each gets its whole, correct answer (the one
the same request gets alone), through continuous batching (16 slots, the rest queued)."""
from __future__ import annotations

import asyncio
import time

import pytest

openai = pytest.importorskip("openai")

from serve_support import MAX_BATCH, LiveServer, need_models, real_models  # noqa: E402

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
