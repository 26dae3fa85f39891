"""Tool calls in text: how a chat model is told about tools, how its calls are constrained, and how they are read
back.

The format is Hermes' (what Qwen 2.5 / 3 templates use), for every model:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

one block a call, several blocks for parallel calls. A chat template that renders `tools` itself (its source
uses the variable) gets the tools, the assistant messages' `tool_calls` and the `tool` messages as they are. For
one that does not (SmolLM2's), puhui writes the documented generic format into the conversation: a system
message that lists each tool's JSON schema and states the format above (`GENERIC_SYSTEM`), earlier calls as
those blocks in the assistant's text, and tool results as user messages `<tool_response>...</tool_response>`.

What the model writes is constrained by a grammar (`grammar`): with tool_choice "required" or a named function
one call or more (one only unless parallel_tool_calls), each the name of a given tool and arguments that are a
document of that tool's JSON schema; with "auto" either such calls or a text that does not start with "<".
So every call parses and its arguments validate.
"""
from __future__ import annotations

import json
import re
import secrets

from ..errors import BadInput

OPEN, CLOSE = "<tool_call>\n", "\n</tool_call>"
GENERIC_SYSTEM = ("You can call these tools (JSON schemas of their arguments):\n{tools}\n\nTo call a tool, answer "
                  "only with one block for each call:\n<tool_call>\n{{\"name\": \"TOOL NAME\", \"arguments\": "
                  "{{...}}}}\n</tool_call>\nOtherwise answer in plain text.")
_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def check_tools(tools, tool_choice, parallel) -> tuple[list[dict], str | dict, bool]:
    """(functions, choice, parallel) of OpenAI's fields, checked; functions are {"name", "description",
    "parameters"}. choice: "none", "auto", "required" or {"name": NAME}."""
    if not isinstance(tools, list) or not tools:
        raise BadInput("tools must be a non-empty list", param="tools")
    functions, names = [], set()
    for i, t in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise BadInput(f"{where}: only tools of type 'function' with a 'function' object", param=f"{where}.type")
        f = t["function"]
        name = f.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise BadInput(f"{where}.function.name must be 1-64 letters, digits, '_', '.' or '-'",
                           param=f"{where}.function.name")
        if name in names:
            raise BadInput(f"{where}.function.name {name!r} is given twice", param=f"{where}.function.name")
        names.add(name)
        params = f.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise BadInput(f"{where}.function.parameters must be a JSON Schema object",
                           param=f"{where}.function.parameters")
        functions.append({"name": name, "description": f.get("description", ""), "parameters": params})
    if tool_choice is None:
        tool_choice = "auto"
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function") if tool_choice.get("type") == "function" else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if name not in names:
            raise BadInput(f"tool_choice names no given tool (tools: {', '.join(sorted(names))})",
                           param="tool_choice")
        tool_choice = {"name": name}
    elif tool_choice not in ("none", "auto", "required"):
        raise BadInput("tool_choice must be 'none', 'auto', 'required' or {'type': 'function', 'function': "
                       "{'name': ...}}", param="tool_choice")
    return functions, tool_choice, True if parallel is None else bool(parallel)


def grammar(functions: list[dict], choice, parallel: bool, json_options: dict) -> str:
    """The Lark grammar (llguidance's dialect, %json for the arguments) of what the model may write."""
    chosen = [f for f in functions if not isinstance(choice, dict) or f["name"] == choice["name"]]
    rules = []
    for i, f in enumerate(chosen):
        schema = {**f["parameters"], "x-guidance": {**f["parameters"].get("x-guidance", {}), **json_options}}
        head = OPEN + '{"name": ' + json.dumps(f["name"]) + ', "arguments": '
        rules.append(f"call_{i}: {json.dumps(head)} args_{i} {json.dumps('}' + CLOSE)}")
        rules.append(f"args_{i}: %json {json.dumps(schema)}")
    call = "call: " + " | ".join(f"call_{i}" for i in range(len(chosen)))
    # calls follow each other with nothing between: after a call, a small model would rather write a newline and
    # the same call again than end its turn, and without the newline it ends
    calls = "calls: call+" if parallel else "calls: call"
    start = "start: calls | TEXT" if choice == "auto" else "start: calls"
    text = "TEXT: /[^<](.|\\n)*/"
    return "\n".join([start, calls, call, *rules, text]) + "\n"


def render_messages(messages: list[dict], functions: list[dict], template_has_tools: bool,
                    offer: bool) -> tuple[list[dict], dict]:
    """(messages, extra template variables): as the template takes them, or in the generic format. offer: the
    tools are offered (tool_choice is not "none")."""
    if template_has_tools:
        msgs = [_with_dict_arguments(m) for m in messages]
        return msgs, ({"tools": [{"type": "function", "function": f} for f in functions]} if offer else {})
    out = []
    if offer:
        listing = "\n".join(json.dumps({"name": f["name"], "description": f["description"],
                                        "parameters": f["parameters"]}, ensure_ascii=False) for f in functions)
        system = GENERIC_SYSTEM.format(tools=listing)
        if messages and messages[0].get("role") == "system":
            system = f"{messages[0]['content']}\n\n{system}"
            messages = messages[1:]
        out.append({"role": "system", "content": system})
    for m in messages:
        if m.get("role") == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m.get('content', '')}\n</tool_response>"})
        elif m.get("role") == "assistant" and m.get("tool_calls"):
            blocks = [OPEN + json.dumps({"name": c["function"]["name"],
                                         "arguments": _arguments(c["function"].get("arguments"))},
                                        ensure_ascii=False) + CLOSE for c in m["tool_calls"]]
            text = "\n".join(([m["content"]] if m.get("content") else []) + blocks)
            out.append({"role": "assistant", "content": text})
        else:
            out.append(m)
    return out, {}


def parse(text: str) -> list[dict] | None:
    """OpenAI's tool_calls of a text that is tool-call blocks (None when it is plain text): ids made here,
    arguments as JSON text."""
    if not text.lstrip().startswith("<tool_call>"):
        return None
    calls = []
    for body in _CALL.findall(text):
        try:
            call = json.loads(body)
        except ValueError:
            continue
        calls.append({"id": f"call_{secrets.token_hex(12)}", "type": "function",
                      "function": {"name": call.get("name", ""),
                                   "arguments": json.dumps(call.get("arguments", {}), ensure_ascii=False)}})
    return calls or None


def _arguments(arguments):
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            raise BadInput("an assistant message's tool_calls[].function.arguments is not JSON",
                           param="messages") from None
    return arguments or {}


def _with_dict_arguments(m: dict) -> dict:
    """HF templates write arguments with tojson: they take them as objects, not JSON text."""
    if m.get("role") != "assistant" or not m.get("tool_calls"):
        return m
    calls = [{**c, "function": {**c["function"], "arguments": _arguments(c["function"].get("arguments"))}}
             for c in m["tool_calls"]]
    return {**m, "tool_calls": calls}
