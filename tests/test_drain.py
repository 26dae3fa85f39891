"""Shutting down with requests in flight (worker.Drain, auth.DrainMiddleware, serve()): new requests get a 503
`shutting_down` with Retry-After, running ones finish within the drain timeout or end with a 503 (a stream: an
error event, then [DONE]), the process exits 0 with no traceback in its log. And /health: the served models only
to a valid key when the server has keys.

The fast tests drive the Drain, its middleware and TaskWorker.end without a model; the slow ones run a real
`puhui serve` process (SIGTERM) and a live app over a tiny random model with SmolLM2's tokenizer."""
from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import pytest

httpx = pytest.importorskip("httpx")

from serve_support import LiveServer, ServerProcess, need_models, sse_events, store_tiny, tiny_generator  # noqa: E402

NO_EOS = {"2": -100}   # SmolLM2's <|im_end|>: the tiny random model must not stop early
DRAIN_S = 2.0


def _shutting_down(r) -> dict:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["type"] == "service_unavailable" and err["code"] == "shutting_down" and err["message"], err
    return err


# ---------------------------------------------------------------------------------------------- no model

def test_drain_refuses_new_requests_then_ends_the_running_ones():
    from puhui.serve.auth import DrainMiddleware
    from puhui.serve.worker import Drain

    async def scenario():
        release = asyncio.Event()
        ended = []

        class Worker:
            def end(self, error):
                ended.append(error)
                release.set()          # what a worker's end() does: the handler gets its answer

        drain = Drain({"w": Worker()})

        async def app(scope, receive, send):
            await release.wait()
            await send({"type": "http.response.start", "status": 503, "headers": [(b"connection", b"keep-alive")]})
            await send({"type": "http.response.body", "body": b"{}"})

        transport = httpx.ASGITransport(app=DrainMiddleware(app, drain))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            running = asyncio.create_task(c.get("/v1/models"))
            while drain.active == 0:
                await asyncio.sleep(0.01)
            start = time.monotonic()
            run = asyncio.create_task(drain.run(0.5, settle=5))
            await asyncio.sleep(0.05)
            refused = await c.post("/v1/chat/completions", json={})
            err = _shutting_down(refused)
            assert 1 <= int(refused.headers["Retry-After"]) <= 2 and "retry after" in err["message"]
            assert refused.headers["connection"] == "close"
            assert await run == 1 and time.monotonic() - start >= 0.5
            answered = await running
            assert drain.active == 0 and answered.headers["connection"] == "close"
            assert len(ended) == 1 and ended[0].status == 503 and ended[0].code == "shutting_down"
            assert await drain.run(0.5) == 0          # nothing in flight: at once

    asyncio.run(scenario())


def test_drain_with_nothing_running_is_immediate():
    from puhui.serve.worker import Drain

    drain = Drain({})
    start = time.monotonic()
    assert asyncio.run(drain.run(30)) == 0 and time.monotonic() - start < 1 and drain.draining


def test_task_worker_end_answers_the_waiting_calls():
    from puhui.serve.errors import APIError
    from puhui.serve.worker import TaskWorker, shutting_down

    class Model:
        name, task = "slow", "embeddings"

    worker = TaskWorker(Model(), max_queue=4, timeout=None)
    gate = threading.Event()

    async def scenario():
        assert await worker.run(lambda m, x: x * 2, 21) == 42
        first = asyncio.create_task(worker.run(lambda m: gate.wait(10) and "first"))    # runs on the thread
        second = asyncio.create_task(worker.run(lambda m: "second"))                    # queued behind it
        await asyncio.sleep(0.1)
        worker.end(shutting_down())
        for t in (first, second):
            with pytest.raises(APIError) as e:
                await t
            assert e.value.status == 503 and e.value.code == "shutting_down"
        with pytest.raises(APIError):
            await worker.run(lambda m: "after")
        assert worker.pending == 0

    try:
        asyncio.run(scenario())
    finally:
        gate.set()
        worker.stop()

    timed = TaskWorker(Model(), timeout=0.05)
    with pytest.raises(APIError) as e:
        asyncio.run(timed.run(lambda m: time.sleep(0.5)))
    assert e.value.status == 504
    timed.stop()


# ---------------------------------------------------------------------------------------------- a real process

def _post(url, body, result: dict, key):
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v1/completions", json=body)
            result[key] = r
    except Exception as e:  # noqa: BLE001 - reported by the test
        result[key] = e


def _stream(url, body, result: dict, key, started: threading.Event):
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            with c.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                assert r.status_code == 200
                lines = r.iter_lines()
                first = next(lines)
                started.set()
                result[key] = sse_events(_Chain(first, lines))
    except Exception as e:  # noqa: BLE001
        started.set()
        result[key] = e


class _Chain:
    """A response-like object whose iter_lines yields a line already read, then the rest."""

    def __init__(self, first, rest):
        self.first, self.rest = first, rest

    def iter_lines(self):
        yield self.first
        yield from self.rest


def _running(url) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('puhui_running_sequences{model="tiny-random"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.slow
def test_sigterm_drains_requests_in_flight(tmp_path):
    """12 long requests (6 streaming) and one short at SIGTERM, with --drain-timeout 2: the short one gets its whole
    answer, the long ones a 503 (streams: an error event, then [DONE]); a request during the drain a 503 with
    Retry-After; the process exits 0 soon after the drain, and its log has no traceback."""
    need_models()
    home = tmp_path / "home"
    name = store_tiny(home)
    with ServerProcess(home, "--model", name, "--drain-timeout", str(DRAIN_S), "--max-batch", "16",
                       "--context", "8192", env={"PUHUI_THREADS": "1"}) as srv:
        long = {"model": name, "prompt": "Hi", "max_tokens": 8000, "temperature": 0, "logit_bias": NO_EOS}
        result: dict = {}
        threads = []
        for i in range(6):
            started = threading.Event()
            threads.append(threading.Thread(target=_stream, args=(srv.url, long, result, f"s{i}", started)))
            threads[-1].start()
            assert started.wait(60)
        for i in range(6):
            threads.append(threading.Thread(target=_post, args=(srv.url, long, result, f"p{i}")))
            threads[-1].start()
        deadline = time.monotonic() + 30
        while _running(srv.url) < 12:
            assert time.monotonic() < deadline, "the 12 long requests never all ran"
            time.sleep(0.05)
        short = threading.Thread(target=_post, args=(srv.url, {**long, "max_tokens": 40}, result, "short"))
        short.start()
        time.sleep(0.05)
        stop = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)

        time.sleep(0.5)                  # draining now: the socket still listens, new requests get a 503
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            refused = c.post("/v1/completions", json={**long, "max_tokens": 2})
            _shutting_down(refused)
            assert int(refused.headers["Retry-After"]) >= 1 and refused.headers["connection"] == "close"
            health = c.get("/health")
            assert health.status_code == 503 and health.json() == {"status": "shutting_down", "models": [name]}

        for t in [*threads, short]:
            t.join(60)
        code = srv.proc.wait(DRAIN_S + 15)
        took = time.monotonic() - stop
        log = srv.log()
        assert code == 0, log
        assert DRAIN_S - 0.1 <= took <= DRAIN_S + 8, took
        assert "Traceback" not in log and "CancelledError" not in log, log

        done = result["short"]
        assert not isinstance(done, Exception) and done.status_code == 200, done
        assert done.json()["usage"]["completion_tokens"] == 40
        assert done.json()["choices"][0]["finish_reason"] == "length"
        for i in range(6):
            r = result[f"p{i}"]
            assert not isinstance(r, Exception), r
            assert "in progress" in _shutting_down(r)["message"]
            events = result[f"s{i}"]
            assert not isinstance(events, Exception), events     # sse_events checked the [DONE]
            assert events[-1]["error"]["code"] == "shutting_down", events[-1]
            assert all("choices" in e for e in events[:-1]) and len(events) > 1
        with pytest.raises(httpx.ConnectError):              # gone: the port is closed
            httpx.get(f"{srv.url}/health", timeout=5)
        print(f"SIGTERM to exit: {took:.2f} s (drain {DRAIN_S:g} s)")


# ---------------------------------------------------------------------------------------------- /health and keys

@pytest.mark.slow
def test_health_names_the_models_only_to_a_key():
    need_models()
    from puhui.serve import create_app

    gen = tiny_generator(max_batch=1, context=64)
    key = "sk-health-key"
    with LiveServer(create_app([gen], api_keys=[key, "other"])) as url, httpx.Client(base_url=url) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
            r = c.get("/health", headers=headers)
            assert r.status_code == 200 and r.json() == {"status": "ok"}, (headers, r.text)
        r = c.get("/health", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json() == {"status": "ok", "models": ["tiny-random"]}
    with LiveServer(create_app([gen])) as url:           # no keys: as before, the models for anyone
        assert json.loads(httpx.get(f"{url}/health").text) == {"status": "ok", "models": ["tiny-random"]}
