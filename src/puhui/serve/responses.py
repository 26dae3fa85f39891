"""OpenAI's Responses API: POST /v1/responses, GET and DELETE /v1/responses/{id}.

A response is a chat answer in items: `input` (a string, or message / function_call / function_call_output
items) and `instructions` (a system message) become the conversation, which `TextGenerator.prepare` renders
as it does for chat completions; `text.format` (text, json_object, json_schema) and function `tools` are
structured outputs there. The answer is an `output` of a `message` item (its `output_text`) or of
`function_call` items. `stream: true` sends the typed events (response.created, response.output_item.added,
response.output_text.delta ..., response.completed). Responses are kept in memory (the last MAX_STORED, unless
`store: false`) so that `previous_response_id` continues a conversation and GET returns one; they do not
outlive the server. A field puhui does not implement is a 400 naming it.
"""
from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from typing import Any, Literal, Optional, Union

from fastapi import APIRouter, Request, Security
from fastapi.responses import Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from ..errors import PuhuiError
from .auth import bearer
from .deps import ERRORS, served_models
from .errors import APIError, from_puhui, unsupported
from .schemas import Closed
from .streams import event_stream, finals, outputs

MAX_STORED = 1000
router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=ERRORS, tags=["responses"])


class ResponseRequest(Closed):
    model: str = Field(..., description="A model id or alias (see GET /v1/models).")
    input: Union[str, list[dict[str, Any]]] = Field(..., description="A string (one user message), or items: "
                                                   "messages {role, content}, function_call, function_call_output.")
    instructions: Optional[str] = Field(None, description="A system message before the input.")
    max_output_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    text: Optional[dict[str, Any]] = Field(None, description="{format: {type: text | json_object | json_schema, "
                                                              "name, schema, strict}}")
    tools: Optional[list[dict[str, Any]]] = Field(None, description="Function tools: {type: 'function', name, "
                                                                    "description, parameters, strict}.")
    tool_choice: Optional[Union[Literal["auto", "none", "required"], dict[str, Any]]] = None
    parallel_tool_calls: Optional[bool] = None
    stream: Optional[bool] = None
    previous_response_id: Optional[str] = None
    store: Optional[bool] = Field(None, description="Default true: kept in memory for previous_response_id.")
    metadata: Optional[dict[str, str]] = None
    user: Optional[str] = None
    seed: Optional[int] = Field(None, description="Extension: reproducible sampling.")
    reasoning: Any = Field(None, description="Not implemented: refused unless null.")
    include: Any = Field(None, description="Not implemented: refused unless null or empty.")
    truncation: Optional[Literal["disabled"]] = Field(None, description="Only 'disabled': nothing is cut.")
    background: Any = Field(None, description="Not implemented: refused unless null or false.")
    prompt: Any = Field(None, description="Not implemented (stored prompts): refused unless null.")
    service_tier: Optional[str] = None


@router.post("/responses", summary="Answer input items (OpenAI's Responses API)")
async def create_response(body: ResponseRequest, request: Request):
    started = time.monotonic()
    served = served_models(request)
    for name, neutral in (("reasoning", (None,)), ("include", (None, [])), ("background", (None, False)),
                          ("prompt", (None,))):
        if getattr(body, name) not in neutral:
            raise unsupported(name)
    worker = served.generation_worker(body.model)
    adapter = served.adapter(body.model)
    gen = worker.generator
    store = _store(request)
    history = []
    if body.previous_response_id is not None:
        previous = store.get(body.previous_response_id)
        if previous is None:
            raise APIError(404, f"no stored response {body.previous_response_id[:80]!r} (responses live in the "
                                f"server's memory; store: false ones are not kept)", param="previous_response_id",
                           code="response_not_found")
        history = previous["conversation"]
    messages = history + _instructions(body.instructions) + _input(body.input)
    sampling = {k: v for k, v in (("temperature", body.temperature), ("top_p", body.top_p), ("seed", body.seed))
                if v is not None}
    sampling.update(_format(body.text))
    functions = _tools(body)
    sampling.update(functions)
    offered = bool(functions) and functions.get("tool_choice") != "none"
    rid = f"resp_{secrets.token_hex(16)}"

    def make():
        s = dict(sampling) if body.max_output_tokens is None else dict(sampling, max_tokens=body.max_output_tokens)
        try:
            return gen.prepare(messages, chat=True, request_id=rid, default_max_tokens=None, adapter=adapter, **s)
        except PuhuiError as e:
            err = from_puhui(e)
            if err.param in ("prompt", "messages", "max_tokens") and body.max_output_tokens is None:
                err.param = "input"
            elif err.param == "max_tokens":
                err.param = "max_output_tokens"
            raise err from None

    req = await run_in_threadpool(make)
    worker.check_capacity(1)
    streams = [worker.submit(req)]
    head = _head(rid, adapter or gen.name, body, functions)
    deadline = started + served.request_timeout
    if body.stream:
        outs = outputs(streams, request, deadline, served.request_timeout)
        return event_stream(_events(head, outs, offered, gen, store, messages, body), outs, streams)
    done = await finals(streams, request, deadline, served.request_timeout)
    if done is None:
        return Response(status_code=499)
    out = done[0]
    c = out.outputs[0]
    response = _finish(head, c.text, c.finish_reason, out.usage, offered, gen)
    _keep(store, body, response, messages)
    return response


@router.get("/responses/{response_id}", summary="A stored response")
async def get_response(response_id: str, request: Request):
    stored = _store(request).get(response_id)
    if stored is None:
        raise APIError(404, f"no stored response {response_id[:80]!r}", param="response_id", code="response_not_found")
    return stored["response"]


@router.delete("/responses/{response_id}", summary="Forget a stored response")
async def delete_response(response_id: str, request: Request):
    if _store(request).pop(response_id, None) is None:
        raise APIError(404, f"no stored response {response_id[:80]!r}", param="response_id", code="response_not_found")
    return {"id": response_id, "object": "response.deleted", "deleted": True}


# ---------------------------------------------------------------------------------------------- translation

def _instructions(text: str | None) -> list[dict]:
    return [{"role": "system", "content": text}] if text else []


def _input(items) -> list[dict]:
    """The conversation of `input`: a string is one user message; items are messages (content a string or
    input_text / output_text parts), function_call and function_call_output."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise APIError(400, f"{where}.role must be user, system, developer or assistant", param=f"{where}.role",
                               code="invalid_value")
            out.append({"role": "system" if role == "developer" else role, "content": _text(item.get("content"), where)})
        elif kind == "function_call":
            call = {"id": item.get("call_id", ""), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "{}")}}
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls"):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            out.append({"role": "tool", "tool_call_id": item.get("call_id", ""),
                        "content": output if isinstance(output, str) else json.dumps(output)})
        else:
            raise unsupported(f"{where}.type", f"input items of type {kind!r}: this server takes message, "
                                               "function_call and function_call_output")
    return out


def _text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where}.content must be a string or a list of text parts", param=f"{where}.content",
                       code="invalid_type")
    texts = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise unsupported(f"{where}.content[{j}].type", f"content of type {kind!r}: this model reads text only")
        texts.append(str(part.get("text", "")))
    return "\n".join(texts)


def _format(text) -> dict:
    """text.format -> the structure keywords of prepare()."""
    fmt = (text or {}).get("format")
    extra = sorted(set(text or {}) - {"format", "verbosity"})
    if extra:
        raise APIError(400, f"Unrecognized request argument supplied: text.{extra[0]}", param=f"text.{extra[0]}",
                       code="unknown_parameter")
    if fmt is None or fmt.get("type") == "text":
        return {}
    if fmt.get("type") == "json_object":
        return {"json_mode": True}
    if fmt.get("type") == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(fmt.get("name"), str) or not isinstance(schema, dict):
            raise APIError(400, "text.format of type json_schema needs name and schema", param="text.format",
                           code="missing_required_parameter")
        return {"json_schema": schema}
    raise APIError(400, "text.format.type must be text, json_object or json_schema", param="text.format.type",
                   code="invalid_value")


def _tools(body) -> dict:
    if not body.tools:
        if body.tool_choice not in (None, "none", "auto"):
            raise APIError(400, "tool_choice needs tools", param="tool_choice", code="invalid_value")
        return {}
    tools = []
    for i, t in enumerate(body.tools):
        if t.get("type") != "function":
            raise unsupported(f"tools[{i}].type", f"tools of type {t.get('type')!r}: this server calls functions only")
        tools.append({"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters")
                                                       if k in t}})
    choice = body.tool_choice
    if isinstance(choice, dict):
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    return {"tools": tools, "tool_choice": choice, "parallel_tool_calls": body.parallel_tool_calls}


# ---------------------------------------------------------------------------------------------- answers

def _head(rid: str, model: str, body, functions) -> dict:
    return {"id": rid, "object": "response", "created_at": int(time.time()), "status": "in_progress",
            "model": model, "output": [], "usage": None, "error": None, "incomplete_details": None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "temperature": body.temperature, "top_p": body.top_p, "previous_response_id": body.previous_response_id,
            "parallel_tool_calls": body.parallel_tool_calls is not False, "store": body.store is not False,
            "text": body.text or {"format": {"type": "text"}}, "tools": body.tools or [],
            "tool_choice": body.tool_choice or "auto", "metadata": body.metadata or {}}


def _items(text: str, offered: bool, gen) -> list[dict]:
    calls = gen.tool_calls(text) if offered else None
    if calls:
        return [{"type": "function_call", "id": f"fc_{secrets.token_hex(12)}", "call_id": c["id"],
                 "name": c["function"]["name"], "arguments": c["function"]["arguments"], "status": "completed"}
                for c in calls]
    return [{"type": "message", "id": f"msg_{secrets.token_hex(12)}", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": text, "annotations": []}]}]


def _finish(head: dict, text: str, finish: str | None, usage, offered: bool, gen, items=None) -> dict:
    incomplete = finish == "length"
    return {**head, "status": "incomplete" if incomplete else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "output": items if items is not None else _items(text, offered, gen),
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
                      "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}}


def _conversation_of(response: dict) -> list[dict]:
    out = []
    for item in response["output"]:
        if item["type"] == "message":
            out.append({"role": "assistant", "content": "".join(p["text"] for p in item["content"])})
        else:
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if out and out[-1].get("tool_calls"):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
    return out


def _store(request: Request) -> OrderedDict:
    state = request.app.state
    if not hasattr(state, "responses"):
        state.responses = OrderedDict()
    return state.responses


def _keep(store: OrderedDict, body, response: dict, messages: list[dict]) -> None:
    if body.store is False:
        return
    store[response["id"]] = {"response": response, "conversation": messages + _conversation_of(response)}
    while len(store) > MAX_STORED:
        store.popitem(last=False)


def _event(kind: str, seq: list[int], **data) -> str:
    seq[0] += 1
    payload = json.dumps({"type": kind, "sequence_number": seq[0], **data}, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {payload}\n\n"


async def _events(head: dict, outs, offered: bool, gen, store, messages, body):
    """The typed events of a streamed response: text deltas as they come (an answer that may call tools is
    held until it is known to be text), then the items and response.completed."""
    seq = [-1]
    yield _event("response.created", seq, response=head)
    yield _event("response.in_progress", seq, response=head)
    msg_id = f"msg_{secrets.token_hex(12)}"
    text, opened, final = "", False, None
    async for _, out in outs:
        c = out.outputs[0]
        text += c.delta
        if out.finished:
            final = out
        could_call = offered and "<tool_call>".startswith(text.lstrip()[:11])
        if not opened and text and not could_call:
            opened = True
            item = {"type": "message", "id": msg_id, "status": "in_progress", "role": "assistant", "content": []}
            yield _event("response.output_item.added", seq, output_index=0, item=item)
            yield _event("response.content_part.added", seq, item_id=msg_id, output_index=0, content_index=0,
                         part={"type": "output_text", "text": "", "annotations": []})
            yield _event("response.output_text.delta", seq, item_id=msg_id, output_index=0, content_index=0,
                         delta=text)
        elif opened and c.delta:
            yield _event("response.output_text.delta", seq, item_id=msg_id, output_index=0, content_index=0,
                         delta=c.delta)
    items = _items(text, offered and not opened, gen)
    if items[0]["type"] == "message":
        items[0]["id"] = msg_id
        if not opened:
            yield _event("response.output_item.added", seq, output_index=0,
                         item={**items[0], "status": "in_progress", "content": []})
            yield _event("response.content_part.added", seq, item_id=msg_id, output_index=0, content_index=0,
                         part={"type": "output_text", "text": "", "annotations": []})
        yield _event("response.output_text.done", seq, item_id=msg_id, output_index=0, content_index=0, text=text)
        yield _event("response.content_part.done", seq, item_id=msg_id, output_index=0, content_index=0,
                     part=items[0]["content"][0])
        yield _event("response.output_item.done", seq, output_index=0, item=items[0])
    else:
        for k, item in enumerate(items):
            yield _event("response.output_item.added", seq, output_index=k,
                         item={**item, "arguments": "", "status": "in_progress"})
            yield _event("response.function_call_arguments.delta", seq, item_id=item["id"], output_index=k,
                         delta=item["arguments"])
            yield _event("response.function_call_arguments.done", seq, item_id=item["id"], output_index=k,
                         arguments=item["arguments"])
            yield _event("response.output_item.done", seq, output_index=k, item=item)
    response = _finish(head, text, final.outputs[0].finish_reason if final else None, final.usage, offered, gen,
                       items)
    _keep(store, body, response, messages)
    yield _event("response.completed" if response["status"] == "completed" else "response.incomplete", seq,
                 response=response)
