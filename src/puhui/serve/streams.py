"""Waiting on the worker's request streams from a request handler: merged outputs, the deadline (504), the client
gone (abort), and server-sent events."""
from __future__ import annotations

import asyncio
import json
import time
from contextlib import aclosing

from fastapi import Request
from fastapi.responses import StreamingResponse

from ..errors import PuhuiError
from .errors import APIError, from_puhui

IDLE_CHECK_S = 0.5              # how often a waiting request checks that its client is still there


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


class ClientGone(Exception):
    """The client closed the connection: there is no one to answer."""


async def outputs(streams, request: Request, deadline: float, timeout: float = 0):
    """(index of the stream, RequestOutput) as they come from several streams, until all have finished.
    Raises APIError 504 at the deadline and ClientGone when the client has left; either way, and when the
    consumer stops early, every unfinished request is aborted."""
    loop = asyncio.get_running_loop()
    pending = {asyncio.ensure_future(s.next()): i for i, s in enumerate(streams)}
    checked = time.monotonic()
    try:
        while pending:
            now = time.monotonic()
            left = deadline - now
            if left <= 0:
                raise APIError(504, f"the request did not finish within the server's timeout of "
                                    f"{timeout:g} s", "timeout_error", code="timeout")
            if now - checked >= IDLE_CHECK_S:
                checked = now
                if await request.is_disconnected():
                    raise ClientGone()
            done, _ = await asyncio.wait(pending, timeout=min(left, IDLE_CHECK_S),
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: pending[t]):
                i = pending.pop(task)
                out = task.result()
                if not out.finished:
                    pending[loop.create_task(streams[i].next())] = i
                yield i, out
    finally:
        for task in pending:
            task.cancel()
        for s in streams:
            s.cancel()


async def finals(streams, request: Request, deadline: float, timeout: float = 0):
    """The finished output of each stream, or None when the client left."""
    done = [None] * len(streams)
    try:
        async with aclosing(outputs(streams, request, deadline, timeout)) as outs:
            async for i, out in outs:
                if out.finished:
                    done[i] = out
    except ClientGone:
        return None
    return done


class EventStream(StreamingResponse):
    """Server-sent events. However the response ends (client gone before or during the body included), the
    body is closed and its requests are cancelled: aborted in the engine, their capacity given back."""

    media_type = "text/event-stream"

    def __init__(self, body, streams, **kw):
        super().__init__(body, **kw)
        self.streams = streams

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()
            finally:
                for s in self.streams:
                    s.cancel()


def event_stream(chunks, outs, streams) -> EventStream:
    """SSE of the chunks made from `outs` (the outputs of `streams`), ending with data: [DONE]; an error
    on the way (a timeout, a failed step, the server shutting down) is sent as an event of OpenAI's error body,
    and ends the stream: then data: [DONE] too, so that a client waiting for it is not left hanging (vLLM's way)."""

    async def events():
        try:
            async for chunk in chunks:
                yield chunk
        except ClientGone:
            return
        except APIError as e:
            yield sse(e.body())
        except PuhuiError as e:
            yield sse(from_puhui(e).body())
        finally:
            await chunks.aclose()
            await outs.aclose()
        yield "data: [DONE]\n\n"

    return EventStream(events(), streams, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

