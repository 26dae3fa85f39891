"""The bridge between asyncio and the engines: one thread per loaded model steps it; requests flow in and
outputs flow out through thread-safe hand-offs.

GenerationWorker: the engine (engine/llm_engine.py) is not thread-safe, so only the worker's thread ever
touches it. A request is made (tokenised and checked, by `TextGenerator.prepare`) on the caller's side, put in an inbox under a lock,
and the thread wakes, enqueues it and calls `engine.step()` until nothing is left to do. Continuous batching
is the engine's: a request enqueued between two steps joins at the next token boundary, a finished sequence
frees its slot at once. Each step's outputs go to their requests' asyncio queues with
`loop.call_soon_threadsafe`. Cancelling (client gone, timeout) puts the request id in the abort list; the
thread aborts it before the next step, which frees its slots.

Admission is bounded: `max_batch` sequences run, `max_queue` more may wait; beyond that `submit` raises a
429 with Retry-After. A failing step fails the requests of that moment with a 500 and the worker goes on.

TaskWorker: one thread per other task object (embeddings, recommendation, speech, detection: torch's own
threads do the parallel work); a bounded number of waiting calls, beyond which 429, and a timeout (504).

Drain: the server's shutdown (serve() runs it when SIGTERM or Ctrl+C stops uvicorn, before uvicorn closes
anything). From its start every new HTTP request is a 503 `shutting_down` with Retry-After (DrainMiddleware in
auth.py); the requests already running go on for up to the drain timeout; then each worker ends the ones still
running with that 503 (`end`): a non-streaming route answers it as its body, a stream sends it as an error event
and then `data: [DONE]`. Nothing is cancelled under a handler, so no request dies with a traceback.
"""
from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import PuhuiError
from .errors import APIError, from_puhui

log = logging.getLogger("puhui.serve")

SETTLE_S = 5.0      # after the drain, how long the ended requests have to write their 503 (then uvicorn's own turn)


def shutting_down(message: str = "the server is shutting down", retry_after: int | None = None) -> APIError:
    """The 503 of a server that is going away: for requests refused during the drain, and those it ends."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return APIError(503, message, "service_unavailable", code="shutting_down", headers=headers)


class RequestStream:
    """The asyncio side of one engine request: its outputs, in order, then the end (or an error)."""

    def __init__(self, worker: "GenerationWorker", req, loop: asyncio.AbstractEventLoop):
        self.worker = worker
        self.req = req
        self.request_id = req.request_id
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sequences = req.params.n
        self.submitted = time.monotonic()
        self.first_token_at: float | None = None
        self.done = False          # finished, failed or cancelled: its capacity is given back
        self.cancelled = False
        self.completion_tokens = 0  # as last reported (worker thread)

    # called on the worker thread
    def put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:   # the loop is closed: the server is going down
            pass

    async def next(self, timeout: float | None = None):
        """The next RequestOutput (raises what the worker reported, or TimeoutError)."""
        if timeout is not None:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        else:
            item = await self.queue.get()
        if isinstance(item, BaseException):
            self._release()
            raise item
        if item.finished:
            self._release()
        return item

    def cancel(self) -> None:
        """The caller is not listening any more: abort the request (a no-op once it is finished)."""
        if not self.done:
            self.cancelled = True
            self.worker._abort(self.request_id)
            self._release()

    def _release(self) -> None:
        if not self.done:
            self.done = True
            self.worker._release(self)


class GenerationWorker:
    """Runs one TextGenerator's engine on its own thread (see the module docstring)."""

    def __init__(self, generator, *, max_queue: int = 64, metrics=None):
        self.generator = generator
        # the generator's one engine, its cache made once for max_batch sequences over the whole context window
        # (what the server needs is allocated at start, not at the first busy minute); from now on only this
        # worker's thread steps it
        self.engine = generator.engine
        self.engine.reserve(generator.max_batch, generator.context_length)
        self.name = generator.name
        self.max_batch = self.engine.max_batch
        self.max_queue = max_queue
        self.metrics = metrics
        self.in_flight = 0                    # sequences admitted and not yet done (event-loop side)
        self.mean_latency = 0.0               # seconds a request takes, smoothed (for Retry-After)
        self._cond = threading.Condition()
        self._inbox: list[RequestStream] = []
        self._aborts: list[str] = []
        self._streams: dict[str, RequestStream] = {}   # worker thread only
        self._stopping = False
        self._ended: APIError | None = None            # set by end(): every request gets it, new ones too
        self._thread = threading.Thread(target=self._run, name=f"puhui-engine-{self.name}", daemon=True)

    @property
    def capacity(self) -> int:
        return self.max_batch + self.max_queue

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    def end(self, error: APIError) -> None:
        """End every request, queued or running, with `error` (the drain's 503); later submissions get it too.
        The thread aborts them in the engine and puts the error in their streams before its next step."""
        with self._cond:
            self._ended = error
            self._cond.notify()

    # ------------------------------------------------------------------------------------------ event loop

    def check_capacity(self, sequences: int) -> None:
        """Raise the 400 (never fits) or 429 (full now) for a request of this many sequences."""
        if sequences > self.capacity:
            raise APIError(400, f"this request needs {sequences} sequences (n x prompts), more than this server "
                                f"runs and queues at once for {self.name} ({self.max_batch} running + "
                                f"{self.max_queue} queued); send fewer", param="n", code="too_many_sequences")
        if self.in_flight + sequences > self.capacity:
            if self.metrics is not None:
                self.metrics.rejected.labels(self.name).inc()
            waiting = max(0, self.in_flight - self.max_batch)
            retry = max(1, min(60, math.ceil(self.mean_latency * (1 + waiting / self.max_batch))))
            raise APIError(429, f"the server is busy: {self.in_flight} sequences are running or queued for "
                                f"{self.name} (at most {self.capacity}); retry after {retry} s",
                           "rate_limit_error", code="queue_full", headers={"Retry-After": str(retry)})

    def submit(self, req) -> RequestStream:
        """Admit an engine Request (from engine.make_request); its outputs come through the stream.
        Call check_capacity first for all the requests of one HTTP request."""
        if self._ended is not None:
            raise _copy(self._ended)
        self.check_capacity(req.params.n)
        stream = RequestStream(self, req, asyncio.get_running_loop())
        self.in_flight += stream.sequences
        with self._cond:
            self._inbox.append(stream)
            self._cond.notify()
        return stream

    def _abort(self, request_id: str) -> None:
        with self._cond:
            self._aborts.append(request_id)
            self._cond.notify()

    def _release(self, stream: RequestStream) -> None:
        self.in_flight -= stream.sequences
        took = time.monotonic() - stream.submitted
        self.mean_latency = took if self.mean_latency == 0 else 0.8 * self.mean_latency + 0.2 * took

    # ------------------------------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._inbox or self._aborts or self._stopping or self.engine.has_unfinished()
                           or (self._ended is not None and self._streams)):
                    self._cond.wait()
                inbox, self._inbox = self._inbox, []
                if self._stopping:
                    break
                aborts, self._aborts = self._aborts, []
                ended = self._ended
            if ended is not None:
                self._end_all(inbox, ended)
                continue
            try:
                self._turn(inbox, aborts)
            except Exception as e:  # noqa: BLE001 - a bug here must not stop the model for good
                self._fail_all(e)
        self._end_all(inbox, self._ended or shutting_down())

    def _end_all(self, inbox: list[RequestStream], error: APIError) -> None:
        """Every request, running or just submitted, gets `error`; the engine is left empty."""
        for stream in [*self._streams.values(), *(s for s in inbox if not s.cancelled)]:
            stream.put(_copy(error))
        self._streams.clear()
        self.engine.abort_all()
        try:
            self._gauges()
        except Exception:  # noqa: BLE001
            pass

    def _turn(self, inbox: list[RequestStream], aborts: list[str]) -> None:
        """Aborts, then admissions, then one engine step, its outputs handed out."""
        for rid in aborts:
            self.engine.abort(rid)
            self._streams.pop(rid, None)
        for stream in inbox:
            if stream.cancelled:
                continue
            try:
                self.engine.enqueue(stream.req)
            except Exception as e:  # noqa: BLE001 - the request's error, not the worker's
                stream.put(_as_api_error(e))
                continue
            self._streams[stream.request_id] = stream
        if self.engine.has_unfinished():
            self._deliver(self.engine.step())
        self._gauges()

    def _fail_all(self, e: Exception) -> None:
        """A step failed: every request in the engine gets the error (a 500 unless it is a PuhuiError)."""
        log.exception("engine step failed for %s; failing %d requests", self.name, len(self._streams))
        err = _as_api_error(e)
        for rid, stream in list(self._streams.items()):
            self.engine.abort(rid)
            stream.put(err)
        self._streams.clear()
        self.engine.abort_all()     # anything left that has no listener
        try:
            self._gauges()
        except Exception:  # noqa: BLE001
            pass

    def _deliver(self, outputs) -> None:
        now = time.monotonic()
        m = self.metrics
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            new_tokens = out.usage.completion_tokens - stream.completion_tokens
            stream.completion_tokens = out.usage.completion_tokens
            if m is not None:
                if new_tokens:
                    m.generated_tokens.labels(self.name).inc(new_tokens)
                if stream.first_token_at is None:
                    m.time_to_first_token.labels(self.name).observe(now - stream.submitted)
                    m.prompt_tokens.labels(self.name).inc(out.usage.prompt_tokens)
            if stream.first_token_at is None:
                stream.first_token_at = now
            stream.put(out)
            if out.finished:
                del self._streams[out.request_id]

    def _gauges(self) -> None:
        if self.metrics is None:
            return
        stats = self.engine.stats()
        self.metrics.running.labels(self.name).set(stats.running)
        with self._cond:
            inbox = sum(s.sequences for s in self._inbox)
        self.metrics.queue_depth.labels(self.name).set(stats.waiting + inbox)


def _copy(e: APIError) -> APIError:
    """A fresh instance of an error handed to many requests (each raise then has its own traceback)."""
    return APIError(e.status, e.message, e.type, e.param, e.code, e.headers)


def _as_api_error(e: Exception) -> APIError:
    if isinstance(e, APIError):
        return e
    if isinstance(e, PuhuiError):
        return from_puhui(e)
    return APIError(500, f"the model failed while generating ({type(e).__name__}); the request was dropped",
                    "server_error")


class TaskWorker:
    """Runs the calls of one task object (an Embedder, a Recommender ...) on its own thread; at most
    `max_queue` calls wait."""

    def __init__(self, model, *, max_queue: int = 64, metrics=None, timeout: float | None = None):
        self.model = model
        self.name = model.name
        self.timeout = timeout    # seconds a call may take, waiting included (then a 504); None: no limit
        self.max_queue = max_queue
        self.metrics = metrics
        self.pending = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"puhui-{model.task}-{self.name}")
        self._answers: set[asyncio.Future] = set()    # what the waiting calls await (event-loop side)
        self._ended: APIError | None = None

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 10) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def end(self, error: APIError) -> None:
        """Answer every waiting call with `error` (the drain's 503), and later ones too; a call already running
        on the thread is not interrupted, its result is dropped. Called on the event loop."""
        self._ended = error
        for answer in list(self._answers):
            if not answer.done():
                answer.set_exception(_copy(error))

    async def run(self, fn, *args):
        """fn(model, *args) on the worker thread, within the worker's timeout."""
        if self._ended is not None:
            raise _copy(self._ended)
        if self.pending >= self.max_queue + 1:
            if self.metrics is not None:
                self.metrics.rejected.labels(self.name).inc()
            raise APIError(429, f"the server is busy: {self.pending} calls are waiting for {self.name} ({self.model.task}); "
                                "retry after 1 s", "rate_limit_error", code="queue_full", headers={"Retry-After": "1"})
        self.pending += 1
        if self.metrics is not None:
            self.metrics.queue_depth.labels(self.name).set(self.pending)
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._pool, fn, self.model, *args)
        answer = loop.create_future()         # the call's outcome, or end()'s error, whichever comes first
        call.add_done_callback(lambda f: _settle(answer, f))
        self._answers.add(answer)
        try:
            return await asyncio.wait_for(answer, self.timeout)
        except asyncio.TimeoutError:
            raise APIError(504, f"the request did not finish within the server's timeout of {self.timeout:g} s",
                           "timeout_error", code="timeout") from None
        finally:
            self._answers.discard(answer)
            call.cancel()                     # still queued (timeout, ended, caller cancelled): it never runs
            self.pending -= 1
            if self.metrics is not None:
                self.metrics.queue_depth.labels(self.name).set(self.pending)


def _settle(answer: asyncio.Future, call: asyncio.Future) -> None:
    """Pass a finished executor call's outcome on to its answer, unless the answer came already."""
    if answer.done():
        return
    if call.cancelled():
        answer.cancel()
    elif call.exception() is not None:
        answer.set_exception(call.exception())
    else:
        answer.set_result(call.result())


class Drain:
    """The shutdown of one app (see the module docstring). `active` counts the HTTP requests in progress (kept by
    DrainMiddleware, which also refuses new ones once `draining`); `run` is called once, by the server."""

    def __init__(self, workers: dict):
        self.workers = workers
        self.draining = False
        self.deadline = 0.0           # time.monotonic() at which the drain ends the requests left
        self.active = 0

    def retry_after(self) -> int:
        """Seconds a refused client should wait: until this server is gone (a restarted one may be up then)."""
        return max(1, min(60, math.ceil(self.deadline - time.monotonic()) + 1))

    async def run(self, timeout: float, forced=lambda: False, settle: float = SETTLE_S) -> int:
        """Refuse new requests, wait up to `timeout` s for the running ones (less if `forced()` turns true: a
        second Ctrl+C), then end those left with a 503 and give them `settle` s to answer it. Returns how
        many were ended."""
        self.draining = True
        self.deadline = time.monotonic() + timeout
        if self.active:
            log.warning("shutting down: waiting up to %g s for the requests in progress (%d)", timeout, self.active)
        while self.active and time.monotonic() < self.deadline and not forced():
            await asyncio.sleep(0.05)
        left = self.active
        if left:
            log.warning("shutting down: ending the requests still in progress (%d) with a 503", left)
            error = shutting_down(f"the server is shutting down: the request was still in progress after the "
                                  f"{timeout:g} s the server gives running requests to finish")
            for w in self.workers.values():
                w.end(error)
            end = time.monotonic() + settle
            while self.active and time.monotonic() < end:
                await asyncio.sleep(0.05)
        return left
