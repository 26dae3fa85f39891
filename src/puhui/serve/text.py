"""The text routes: completions (and the legacy engines route) and chat completions.

Every parameter is honoured or refused with a 400 that names it; a prompt that does not fit the context with
its max_tokens is a 400 that states both numbers (the engine's check); `model` in answers is the real model
that ran, not the alias asked for. A request is made by the model's `TextGenerator.prepare` (the same door the
Python API and the CLI use) and runs through the model's GenerationWorker (worker.py), which batches it with
every other request at token boundaries; this module only translates OpenAI's fields and answers.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from fastapi import APIRouter, Request, Security
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..errors import PuhuiError
from .auth import bearer
from .deps import ERRORS, engine_model, served_models
from .errors import APIError, from_puhui, unsupported
from .logprobs import TokenText, chat_logprobs, legacy_logprobs
from .schemas import (ChatCompletionRequest, ChatCompletionResponse, CompletionRequest, CompletionResponse,
                      LegacyChatCompletionRequest, LegacyCompletionRequest)
from .streams import event_stream, finals, outputs, sse

COMPLETION_MAX_TOKENS = 16      # OpenAI's default for /v1/completions

_SSE = {"content": {"text/event-stream": {"schema": {"type": "string"}}},
        "description": "JSON, or with stream=true server-sent events `data: {chunk}` ending with `data: [DONE]`."}

router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=ERRORS)


# ---------------------------------------------------------------------------------------------- completions

@router.post("/completions", response_model=CompletionResponse, responses={200: _SSE},
             summary="Complete a prompt (or several)")
async def completions(body: CompletionRequest, request: Request):
    return await _completions(body, request)


@router.post("/engines/{engine}/completions", response_model=CompletionResponse, responses={200: _SSE},
             summary="Legacy route of openai<1 clients: the model is the engine in the path")
async def engine_completions(engine: str, body: LegacyCompletionRequest, request: Request):
    body.model = engine_model(engine, body.model)
    return await _completions(body, request)


async def _completions(body: CompletionRequest, request: Request):
    started = time.monotonic()
    served = served_models(request)
    worker = served.generation_worker(body.model)
    gen = worker.generator
    if body.suffix is not None:
        raise unsupported("suffix", "insertion (fill-in-the-middle) is not implemented")
    n = body.n or 1
    if body.best_of is not None and not (_is_int(body.best_of) and body.best_of in (1, n)):
        raise unsupported("best_of", "only null, 1 or the value of n (no server-side ranking of choices)")
    include_usage = _stream_options(body)
    prompts = _prompts(body.prompt)
    sampling = _sampling(body)
    sampling["max_tokens"] = body.max_tokens or COMPLETION_MAX_TOKENS
    if body.logprobs is not None:
        sampling["logprobs"] = body.logprobs
    if body.echo:
        sampling["echo"] = True
    rid = f"cmpl-{uuid.uuid4().hex}"

    def make():
        reqs = []
        for i, p in enumerate(prompts):
            try:
                reqs.append(gen.prepare(p, chat=False, request_id=f"{rid}-{i}", **sampling))
            except PuhuiError as e:
                err = from_puhui(e)
                if len(prompts) > 1 and err.param in ("prompt", "max_tokens"):
                    err.message = f"prompt {i}: {err.message}"
                raise err from None
        return reqs

    reqs = await run_in_threadpool(make)
    streams = _submit(worker, reqs)
    ctx = _Ctx(rid, int(time.time()), gen.name, n, body.logprobs, bool(body.echo), include_usage,
               started + served.request_timeout, TokenText(gen.tokenizer, served.token_cache(gen.name)))
    if body.stream:
        outs = outputs(streams, request, ctx.deadline, served.request_timeout)
        return event_stream(_completion_chunks(ctx, reqs, outs), outs, streams)
    done = await finals(streams, request, ctx.deadline, served.request_timeout)
    if done is None:
        return Response(status_code=499)   # the client left: nobody to answer
    choices = []
    for i, (req, out) in enumerate(zip(reqs, done)):
        for c in out.outputs:
            lp = None
            if ctx.logprobs is not None:
                start = 0 if ctx.echo else len(_prompt_text(ctx, req))
                lp = legacy_logprobs(ctx.tokens, c.logprobs, c, start, ctx.logprobs, req.prompt_ids[0])
            choices.append({"index": i * n + c.index, "text": c.text, "logprobs": lp,
                            "finish_reason": c.finish_reason})
    return {"id": rid, "object": "text_completion", "created": ctx.created, "model": ctx.model,
            "choices": choices, "usage": _usage(done)}


async def _completion_chunks(ctx: _Ctx, reqs, outs):
    offsets: dict[tuple[int, int], int] = {}   # text_offset of each choice's next token
    ended: set[tuple[int, int]] = set()         # a finished choice is in every later output of its request
    done = [None] * len(reqs)
    head = {"id": ctx.id, "object": "text_completion", "created": ctx.created, "model": ctx.model}
    async for i, out in outs:
        if out.finished:
            done[i] = out
        choices = []
        for c in out.outputs:
            key = (i, c.index)
            if key in ended:
                continue
            if c.finish_reason:
                ended.add(key)
            if not (c.delta or c.finish_reason or (c.delta_logprobs and ctx.logprobs is not None)):
                continue
            lp = None
            if ctx.logprobs is not None:
                if key not in offsets:
                    offsets[key] = 0 if ctx.echo else len(_prompt_text(ctx, reqs[i]))
                lp = legacy_logprobs(ctx.tokens, c.delta_logprobs, c, offsets[key], ctx.logprobs,
                                     reqs[i].prompt_ids[0])
                offsets[key] += len(c.delta)
            choices.append({"index": i * ctx.n + c.index, "text": c.delta, "logprobs": lp,
                            "finish_reason": c.finish_reason})
        if choices:
            yield sse({**head, "choices": choices})
    if ctx.include_usage:
        yield sse({**head, "choices": [], "usage": _usage(done)})


# ---------------------------------------------------------------------------------------------- chat

# OpenAI fields we do not implement, and the values of each that ask for nothing (so they are accepted)
_CHAT_NEUTRAL = {
    "tools": ([],), "tool_choice": ("none",), "functions": ([],), "function_call": ("none",),
    "parallel_tool_calls": (), "audio": (), "modalities": (["text"],), "prediction": (),
    "reasoning_effort": (), "verbosity": (), "web_search_options": (), "service_tier": ("auto", "default"),
    "store": (False,), "metadata": ({},), "moderation": (), "prompt_cache_key": (), "prompt_cache_options": (),
    "prompt_cache_retention": (),
}
_WHY = {"tools": "tool calling is not implemented yet", "tool_choice": "tool calling is not implemented yet",
        "functions": "function calling is not implemented yet", "function_call": "function calling is not implemented yet",
        "parallel_tool_calls": "tool calling is not implemented yet", "audio": "chat has no audio output",
        "modalities": "only ['text']", "store": "nothing is stored", "metadata": "nothing is stored"}


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses={200: _SSE},
             summary="Answer a conversation through the model's chat template")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    return await _chat(body, request)


@router.post("/engines/{engine}/chat/completions", response_model=ChatCompletionResponse, responses={200: _SSE},
             summary="Legacy route of openai<1 clients: the model is the engine in the path")
async def engine_chat_completions(engine: str, body: LegacyChatCompletionRequest, request: Request):
    body.model = engine_model(engine, body.model)
    return await _chat(body, request)


async def _chat(body: ChatCompletionRequest, request: Request):
    started = time.monotonic()
    served = served_models(request)
    worker = served.generation_worker(body.model)
    gen = worker.generator
    for name, neutral in _CHAT_NEUTRAL.items():
        value = getattr(body, name)
        if value is not None and not _is_neutral(value, neutral):
            raise unsupported(name, _WHY.get(name, ""))
    json_mode = _json_mode(body.response_format)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs set to true", param="top_logprobs", code="invalid_value")
    include_usage = _stream_options(body)
    if (body.max_tokens is not None and body.max_completion_tokens is not None
            and body.max_tokens != body.max_completion_tokens):
        raise APIError(400, f"max_tokens ({body.max_tokens}) and max_completion_tokens "
                            f"({body.max_completion_tokens}) differ: send one", param="max_tokens", code="invalid_value")
    messages = _messages(body.messages)
    if json_mode and not any("json" in str(m.get("content", "")).lower() for m in messages):
        # OpenAI's rule and message: without being asked for JSON a model may fill max_tokens with blanks
        raise APIError(400, "'messages' must contain the word 'json' in some form, to use 'response_format' of "
                            "type 'json_object'.", param="messages", code="invalid_value")
    n = body.n or 1
    sampling = _sampling(body)
    if json_mode:
        sampling["json_mode"] = True
    max_tokens = body.max_completion_tokens or body.max_tokens
    if body.logprobs:
        sampling["logprobs"] = body.top_logprobs or 0
    rid = f"chatcmpl-{uuid.uuid4().hex}"

    def make():
        s = dict(sampling) if max_tokens is None else dict(sampling, max_tokens=max_tokens)
        try:   # without max_tokens: all the room the context leaves (OpenAI's default for chat)
            return gen.prepare(messages, chat=True, request_id=rid, default_max_tokens=None, **s)
        except PuhuiError as e:
            err = from_puhui(e)
            if err.param in ("prompt", "max_tokens") and max_tokens is None:
                err.param = "messages"
            raise err from None

    req = await run_in_threadpool(make)
    streams = _submit(worker, [req])
    ctx = _Ctx(rid, int(time.time()), gen.name, n, 0 if body.logprobs else None, False, include_usage,
               started + served.request_timeout, TokenText(gen.tokenizer, served.token_cache(gen.name)))
    if body.stream:
        outs = outputs(streams, request, ctx.deadline, served.request_timeout)
        return event_stream(_chat_chunks(ctx, outs), outs, streams)
    done = await finals(streams, request, ctx.deadline, served.request_timeout)
    if done is None:
        return Response(status_code=499)   # the client left: nobody to answer
    out = done[0]
    choices = []
    for c in out.outputs:
        lp = {"content": chat_logprobs(ctx.tokens, c.logprobs, c), "refusal": None} if body.logprobs else None
        choices.append({"index": c.index, "message": {"role": "assistant", "content": c.text},
                        "logprobs": lp, "finish_reason": c.finish_reason})
    return {"id": rid, "object": "chat.completion", "created": ctx.created, "model": ctx.model,
            "choices": choices, "usage": _usage(done)}


async def _chat_chunks(ctx: _Ctx, outs):
    head = {"id": ctx.id, "object": "chat.completion.chunk", "created": ctx.created, "model": ctx.model}
    usage_field = {"usage": None} if ctx.include_usage else {}
    yield sse({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                    "finish_reason": None} for i in range(ctx.n)], **usage_field})
    final = None
    ended: set[int] = set()   # a finished choice is in every later output of its request
    async for _, out in outs:
        if out.finished:
            final = out
        choices = []
        for c in out.outputs:
            if c.index in ended:
                continue
            if c.finish_reason:
                ended.add(c.index)
            if c.delta or (ctx.logprobs is not None and c.delta_logprobs):
                lp = None
                if ctx.logprobs is not None:
                    lp = {"content": chat_logprobs(ctx.tokens, c.delta_logprobs, c), "refusal": None}
                choices.append({"index": c.index, "delta": {"content": c.delta}, "logprobs": lp,
                                "finish_reason": None})
            if c.finish_reason:
                choices.append({"index": c.index, "delta": {}, "logprobs": None, "finish_reason": c.finish_reason})
        if choices:
            yield sse({**head, "choices": choices, **usage_field})
    if ctx.include_usage and final is not None:
        yield sse({**head, "choices": [], "usage": _usage([final])})


def _messages(messages) -> list[dict]:
    """The request's messages as the chat template takes them; refuses what the template cannot carry."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.role in ("tool", "function"):
            raise unsupported(f"{where}.role", f"role {m.role!r}: tool calling is not implemented yet")
        for name in ("name", "tool_calls", "tool_call_id", "function_call", "audio"):
            if getattr(m, name) is not None:
                why = ("the chat template has no place for a participant's name" if name == "name"
                       else "tool calling is not implemented yet")
                raise unsupported(f"{where}.{name}", why)
        if m.refusal is not None and (m.role != "assistant" or not isinstance(m.refusal, str)):
            raise APIError(400, f"{where}.refusal must be a string, and only in an assistant message",
                           param=f"{where}.refusal", code="invalid_value")
        content = m.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text":
                    raise unsupported(f"{where}.content[{j}].type",
                                      f"content of type {part.type!r}: this model reads text only")
                extra = sorted(part.model_extra or {})
                if extra:
                    raise APIError(400, f"Unrecognized request argument supplied: {where}.content[{j}].{extra[0]}",
                                   param=f"{where}.content[{j}].{extra[0]}", code="unknown_parameter")
                if not isinstance(part.text, str):
                    raise APIError(400, f"{where}.content[{j}].text must be a string",
                                   param=f"{where}.content[{j}].text", code="invalid_type")
                texts.append(part.text)
            content = "\n".join(texts)
        if content is None:
            if m.role == "assistant" and m.refusal is not None:
                content = m.refusal
            else:
                raise APIError(400, f"{where}.content is required", param=f"{where}.content",
                               code="missing_required_parameter")
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return out


# ---------------------------------------------------------------------------------------------- shared

@dataclass
class _Ctx:
    id: str
    created: int
    model: str
    n: int
    logprobs: int | None
    echo: bool
    include_usage: bool
    deadline: float
    tokens: TokenText
    _prompt_texts: dict = field(default_factory=dict)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_neutral(value, neutral) -> bool:
    return any(type(value) is type(v) and value == v for v in neutral)


def _stream_options(body) -> bool:
    opts = body.stream_options
    if opts is None:
        return False
    if not body.stream:
        raise APIError(400, "stream_options is only allowed when stream is true", param="stream_options",
                       code="invalid_value")
    if opts.include_obfuscation:
        raise unsupported("stream_options.include_obfuscation", "chunks carry no obfuscation field")
    return bool(opts.include_usage)


def _prompts(prompt) -> list:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty: send a string, a list of strings or token ids", param="prompt",
                       code="invalid_value")
    if isinstance(prompt[0], int):
        return [list(prompt)]
    for i, p in enumerate(prompt):
        if isinstance(p, list) and not p:
            raise APIError(400, f"prompt[{i}] is an empty list of token ids", param="prompt", code="invalid_value")
    return list(prompt)


_SAMPLING_FIELDS = ("temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty", "seed",
                    "logit_bias", "top_k", "min_p", "repetition_penalty", "ignore_eos")


def _json_mode(fmt) -> bool:
    """response_format: text (None too) -> False; json_object -> True (constrained decoding, engine/json_mode.py);
    json_schema is refused."""
    if fmt is None:
        return False
    if fmt.type == "json_schema":
        raise unsupported("response_format", "type 'json_schema' (decoding constrained by a schema) is not "
                                             "implemented yet: use type 'json_object' (any JSON object) and check "
                                             "the schema yourself")
    if fmt.json_schema is not None:
        raise APIError(400, "response_format.json_schema is only for type 'json_schema'",
                       param="response_format", code="invalid_value")
    return fmt.type == "json_object"


def _sampling(body) -> dict:
    out = {}
    for name in _SAMPLING_FIELDS:
        value = getattr(body, name)
        if value is not None:
            out[name] = value
    return out


def _submit(worker, reqs) -> list:
    worker.check_capacity(sum(r.params.n for r in reqs))
    return [worker.submit(r) for r in reqs]


def _usage(finals) -> dict:
    prompt = sum(f.usage.prompt_tokens for f in finals if f is not None)
    completion = sum(f.usage.completion_tokens for f in finals if f is not None)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _prompt_text(ctx: _Ctx, req) -> str:
    if req.prompt is not None:
        return req.prompt
    if req.request_id not in ctx._prompt_texts:
        ctx._prompt_texts[req.request_id] = ctx.tokens.tokenizer.decode(req.prompt_ids, skip_special_tokens=False)
    return ctx._prompt_texts[req.request_id]
