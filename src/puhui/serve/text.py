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
from .errors import APIError, cut, from_puhui, quoted, unsupported
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
    body.model = engine_model(engine, body.model, served_models(request))
    return await _completions(body, request)


async def _completions(body: CompletionRequest, request: Request):
    started = time.monotonic()
    served = served_models(request)
    worker = served.generation_worker(body.model)
    adapter = served.adapter(body.model)
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
    if body.regex is not None and body.grammar is not None:
        raise APIError(400, "regex and grammar: send one", param="grammar", code="invalid_value")
    if body.regex is not None:
        sampling["regex"] = body.regex
    if body.grammar is not None:
        sampling["grammar"] = body.grammar
    rid = f"cmpl-{uuid.uuid4().hex}"
    # an instruction-following completion by default: a text prompt to a chat model is one user turn (as `puhui
    # run` and Ollama's generate do); raw, and echo (whose text and logprobs are those of what was sent), continue
    # the prompt as it is
    chat = bool(gen.chat_template) and not body.raw and not body.echo

    def make():
        reqs = []
        for i, p in enumerate(prompts):
            try:
                reqs.append(gen.prepare(p, chat=chat and isinstance(p, str), request_id=f"{rid}-{i}",
                                        adapter=adapter, **sampling))
            except PuhuiError as e:
                err = from_puhui(e)
                if len(prompts) > 1 and err.param in ("prompt", "max_tokens"):
                    err.message = f"prompt {i}: {err.message}"
                raise err from None
        return reqs

    reqs = await run_in_threadpool(make)
    streams = _submit(worker, reqs)
    ctx = _Ctx(rid, int(time.time()), adapter or gen.name, n, body.logprobs, bool(body.echo), include_usage,
               started + served.request_timeout, TokenText(gen.tokenizer, served.token_cache(gen.name)))
    for p, req in zip(prompts, reqs):
        if chat and isinstance(p, str):
            ctx._prompt_texts[req.request_id] = p    # text offsets count from what the client sent
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
    "audio": (), "modalities": (["text"],), "prediction": (),
    "reasoning_effort": (), "verbosity": (), "web_search_options": (), "service_tier": ("auto", "default"),
    "store": (False,), "metadata": ({},), "moderation": (), "prompt_cache_key": (), "prompt_cache_options": (),
    "prompt_cache_retention": (),
}
_WHY = {"audio": "chat has no audio output",
        "modalities": "only ['text']", "store": "nothing is stored", "metadata": "nothing is stored"}


@router.post("/chat/completions", response_model=ChatCompletionResponse, responses={200: _SSE},
             summary="Answer a conversation through the model's chat template")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    return await _chat(body, request)


@router.post("/engines/{engine}/chat/completions", response_model=ChatCompletionResponse, responses={200: _SSE},
             summary="Legacy route of openai<1 clients: the model is the engine in the path")
async def engine_chat_completions(engine: str, body: LegacyChatCompletionRequest, request: Request):
    body.model = engine_model(engine, body.model, served_models(request))
    return await _chat(body, request)


async def _chat(body: ChatCompletionRequest, request: Request):
    started = time.monotonic()
    served = served_models(request)
    worker = served.generation_worker(body.model)
    adapter = served.adapter(body.model)
    gen = worker.generator
    for name, neutral in _CHAT_NEUTRAL.items():
        value = getattr(body, name)
        if value is not None and not _is_neutral(value, neutral):
            raise unsupported(name, _WHY.get(name, ""))
    structure = _structure(body.response_format)
    json_mode = bool(structure.get("json_mode"))
    tools, legacy = _tools(body)
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
    sampling = {**_sampling(body), **structure, **tools}
    offered = bool(tools) and tools.get("tool_choice") != "none"
    max_tokens = body.max_completion_tokens or body.max_tokens
    if body.logprobs:
        sampling["logprobs"] = body.top_logprobs or 0
    rid = f"chatcmpl-{uuid.uuid4().hex}"

    def make():
        s = dict(sampling) if max_tokens is None else dict(sampling, max_tokens=max_tokens)
        try:   # without max_tokens: all the room the context leaves (OpenAI's default for chat)
            return gen.prepare(messages, chat=True, request_id=rid, default_max_tokens=None, adapter=adapter, **s)
        except PuhuiError as e:
            err = from_puhui(e)
            if err.param in ("prompt", "max_tokens") and max_tokens is None:
                err.param = "messages"
            raise err from None

    req = await run_in_threadpool(make)
    streams = _submit(worker, [req])
    ctx = _Ctx(rid, int(time.time()), adapter or gen.name, n, 0 if body.logprobs else None, False, include_usage,
               started + served.request_timeout, TokenText(gen.tokenizer, served.token_cache(gen.name)))
    if body.stream:
        outs = outputs(streams, request, ctx.deadline, served.request_timeout)
        chunks = _chat_chunks(ctx, outs, _tool_deltas(legacy, gen) if offered else _text_deltas(ctx))
        return event_stream(chunks, outs, streams)
    done = await finals(streams, request, ctx.deadline, served.request_timeout)
    if done is None:
        return Response(status_code=499)   # the client left: nobody to answer
    out = done[0]
    choices = []
    for c in out.outputs:
        lp = {"content": chat_logprobs(ctx.tokens, c.logprobs, c), "refusal": None} if body.logprobs else None
        message, finish = _answer(c.text, c.finish_reason, offered, legacy, gen)
        choices.append({"index": c.index, "message": message, "logprobs": lp, "finish_reason": finish})
    return {"id": rid, "object": "chat.completion", "created": ctx.created, "model": ctx.model,
            "choices": choices, "usage": _usage(done)}


async def _chat_chunks(ctx: _Ctx, outs, deltas):
    """The chunks of a streamed chat answer: the role first, then what `deltas(c)` makes of each choice's
    output (its chunk choices: content, tool calls, the finish reason), then the usage when asked for."""
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
            choices += deltas(c)
        if choices:
            yield sse({**head, "choices": choices, **usage_field})
    if ctx.include_usage and final is not None:
        yield sse({**head, "choices": [], "usage": _usage([final])})


def _delta(index: int, delta: dict, finish: str | None = None, logprobs=None) -> dict:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


def _text_deltas(ctx: _Ctx):
    """A plain answer's deltas: its text (and logprobs) as it comes."""
    def deltas(c) -> list[dict]:
        out = []
        if c.delta or (ctx.logprobs is not None and c.delta_logprobs):
            lp = None
            if ctx.logprobs is not None:
                lp = {"content": chat_logprobs(ctx.tokens, c.delta_logprobs, c), "refusal": None}
            out.append(_delta(c.index, {"content": c.delta}, logprobs=lp))
        if c.finish_reason:
            out.append(_delta(c.index, {}, c.finish_reason))
        return out
    return deltas


def _tools(body) -> tuple[dict, bool]:
    """(the tools keywords of TextGenerator.prepare, whether they came in the legacy functions form)."""
    if body.functions is not None and body.tools is not None:
        raise APIError(400, "functions and tools: send tools (functions is its legacy form)", param="functions",
                       code="invalid_value")
    if body.function_call is not None and body.tool_choice is not None:
        raise APIError(400, "function_call and tool_choice: send tool_choice", param="function_call",
                       code="invalid_value")
    legacy = body.functions is not None
    tools, choice = body.tools, body.tool_choice
    if legacy:
        if not isinstance(body.functions, list):
            raise APIError(400, "functions must be a list", param="functions", code="invalid_type")
        tools = [{"type": "function", "function": f} for f in body.functions]
        fc = body.function_call
        choice = fc if fc in (None, "none", "auto") else (
            {"type": "function", "function": {"name": fc.get("name")}} if isinstance(fc, dict) else fc)
    if tools is None or tools == []:
        if choice is not None:
            raise APIError(400, "tool_choice is only allowed when tools are given", param="tool_choice",
                           code="invalid_value")
        if body.parallel_tool_calls is not None and tools is None:
            raise APIError(400, "parallel_tool_calls needs tools", param="parallel_tool_calls", code="invalid_value")
        return {}, legacy
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": body.parallel_tool_calls}, legacy


def _answer(text: str, finish: str | None, offered: bool, legacy: bool, gen) -> tuple[dict, str | None]:
    """(message, finish_reason) of a finished choice: its tool calls when it made some."""
    calls = gen.tool_calls(text) if offered else None
    if not calls:
        return {"role": "assistant", "content": text}, finish
    if legacy:
        return {"role": "assistant", "content": None, "function_call": calls[0]["function"]}, "function_call"
    return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"


def _tool_deltas(legacy: bool, gen):
    """Deltas of an answer that may call tools: text that cannot be the start of a call streams as content at
    once (what was held back with it); calls come as OpenAI streams them (id, type and name first, then the
    arguments in pieces), then the finish reason "tool_calls"."""
    text: dict[int, str] = {}
    plain: set[int] = set()     # choices known to be plain text: their deltas stream as they come

    def deltas(c) -> list[dict]:
        out = []
        text[c.index] = text.get(c.index, "") + c.delta
        so_far = text[c.index].lstrip()
        delta = c.delta
        if c.index not in plain and so_far and not "<tool_call>".startswith(so_far[:11]):
            plain.add(c.index)
            delta = text[c.index]                  # what was held back, and this delta
        if c.index in plain and delta:
            out.append(_delta(c.index, {"content": delta}))
        if not c.finish_reason:
            return out
        message, finish = _answer(text[c.index], c.finish_reason, c.index not in plain, legacy, gen)
        if message.get("tool_calls"):
            for k, call in enumerate(message["tool_calls"]):
                fn = call["function"]
                out.append(_delta(c.index, {"tool_calls": [{"index": k, "id": call["id"], "type": "function",
                                                            "function": {"name": fn["name"], "arguments": ""}}]}))
                args = fn["arguments"]
                out += [_delta(c.index, {"tool_calls": [{"index": k, "function": {"arguments": args[a:a + 16]}}]})
                        for a in range(0, len(args), 16)]
        elif message.get("function_call"):
            fn = message["function_call"]
            out.append(_delta(c.index, {"function_call": {"name": fn["name"], "arguments": fn["arguments"]}}))
        elif c.index not in plain and text[c.index]:
            out.append(_delta(c.index, {"content": text[c.index]}))
        out.append(_delta(c.index, {}, finish))
        return out
    return deltas


def _messages(messages) -> list[dict]:
    """The request's messages as the chat template takes them; refuses what the template cannot carry."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if m.role in ("tool", "function") and not (out and (out[-1].get("tool_calls") or out[-1]["role"] == "tool")):
            raise APIError(400, f"{where}: a message with role {m.role!r} must answer a preceding assistant message "
                                f"with tool_calls", param=f"{where}.role", code="invalid_value")
        if m.audio is not None:
            raise unsupported(f"{where}.audio", "this model reads text only")
        if m.name is not None and m.role != "function":
            raise unsupported(f"{where}.name", "the chat template has no place for a participant's name")
        if m.tool_call_id is not None and m.role != "tool":
            raise APIError(400, f"{where}.tool_call_id is only for a tool message", param=f"{where}.tool_call_id",
                           code="invalid_value")
        if (m.tool_calls is not None or m.function_call is not None) and m.role != "assistant":
            raise APIError(400, f"{where}: only an assistant message makes tool calls", param=f"{where}.tool_calls",
                           code="invalid_value")
        calls = _history_calls(m, where)
        if calls:
            out.append({"role": "assistant", "content": m.content if isinstance(m.content, str) else "",
                        "tool_calls": calls})
            continue
        if m.refusal is not None and (m.role != "assistant" or not isinstance(m.refusal, str)):
            raise APIError(400, f"{where}.refusal must be a string, and only in an assistant message",
                           param=f"{where}.refusal", code="invalid_value")
        content = m.content
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if part.type != "text":
                    raise unsupported(f"{where}.content[{j}].type",
                                      f"content of type {quoted(part.type)}: this model reads text only")
                extra = sorted(part.model_extra or {})
                if extra:
                    raise APIError(400, f"Unrecognized request argument supplied: {where}.content[{j}].{cut(extra[0])}",
                                   param=f"{where}.content[{j}].{cut(extra[0])}", code="unknown_parameter")
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
        role = {"developer": "system", "function": "tool"}.get(m.role, m.role)
        out.append({"role": role, "content": content, **({"tool_call_id": m.tool_call_id} if m.tool_call_id else {})})
    return out


def _history_calls(m, where: str) -> list[dict] | None:
    """An assistant message's earlier calls (tool_calls, or the legacy function_call), checked."""
    calls = m.tool_calls
    if m.function_call is not None:
        calls = [{"id": "call_0", "type": "function", "function": m.function_call}]
    if calls is None:
        return None
    if not isinstance(calls, list):
        raise APIError(400, f"{where}.tool_calls must be a list", param=f"{where}.tool_calls", code="invalid_type")
    for j, c in enumerate(calls):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments", "{}"), str):
            raise APIError(400, f"{where}.tool_calls[{j}] must be {{id, type: 'function', function: {{name, arguments "
                                f"(JSON text)}}}}", param=f"{where}.tool_calls[{j}]", code="invalid_value")
    return calls


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


def _structure(fmt) -> dict:
    """The sampling keywords of response_format: text (None too) -> none; json_object -> json_mode; json_schema
    -> json_schema (its `schema`; `name` is required as OpenAI requires it, `strict` is always honoured)."""
    if fmt is None or fmt.type == "text":
        if fmt is not None and fmt.json_schema is not None:
            raise APIError(400, "response_format.json_schema is only for type 'json_schema'",
                           param="response_format", code="invalid_value")
        return {}
    if fmt.type == "json_object":
        if fmt.json_schema is not None:
            raise APIError(400, "response_format.json_schema is only for type 'json_schema'",
                           param="response_format", code="invalid_value")
        return {"json_mode": True}
    spec = fmt.json_schema
    if not isinstance(spec, dict):
        raise APIError(400, "response_format of type 'json_schema' needs json_schema: {name, schema, strict}",
                       param="response_format.json_schema", code="missing_required_parameter")
    extra = sorted(set(spec) - {"name", "schema", "strict", "description"})
    if extra:
        raise APIError(400, f"Unrecognized request argument supplied: response_format.json_schema.{cut(extra[0])}",
                       param=f"response_format.json_schema.{cut(extra[0])}", code="unknown_parameter")
    if not isinstance(spec.get("name"), str) or not spec["name"]:
        raise APIError(400, "response_format.json_schema.name is required (a string)",
                       param="response_format.json_schema.name", code="missing_required_parameter")
    schema = spec.get("schema", {"type": "object"})
    if not isinstance(schema, dict):
        raise APIError(400, "response_format.json_schema.schema must be a JSON Schema object",
                       param="response_format.json_schema.schema", code="invalid_type")
    if spec.get("strict") not in (None, True, False):
        raise APIError(400, "response_format.json_schema.strict must be a boolean",
                       param="response_format.json_schema.strict", code="invalid_type")
    return {"json_schema": schema}


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
    """The prompt as the client sent it (text offsets of logprobs count from its end)."""
    if req.request_id in ctx._prompt_texts:
        return ctx._prompt_texts[req.request_id]
    if req.prompt is not None:
        return req.prompt
    if req.request_id not in ctx._prompt_texts:
        ctx._prompt_texts[req.request_id] = ctx.tokens.tokenizer.decode(req.prompt_ids, skip_special_tokens=False)
    return ctx._prompt_texts[req.request_id]
