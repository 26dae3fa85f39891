"""errors.py and its one HTTP mapping (serve/errors.py `from_puhui`): an error carries the parameter at fault as
`param`, and the server answers with it, never with a name read from the wording. Fast: no model, no network."""
from types import SimpleNamespace

import pytest
import torch

from puhui.engine.sampling import SamplingParams
from puhui.errors import BadCheckpoint, BadInput, DoesNotFit, ModelNotFound, PuhuiError, Unsupported
from puhui.serve import errors as serve_errors
from puhui.serve.errors import from_puhui


def test_every_error_carries_a_param():
    for cls in (PuhuiError, BadInput, BadCheckpoint, Unsupported, DoesNotFit, ModelNotFound):
        assert cls("x").param is None
        e = cls("x", param="top_p")
        assert e.param == "top_p" and str(e) == "x"


def test_the_param_comes_from_the_exception():
    err = from_puhui(BadInput("must be a number in (0, 1]", param="top_p"))
    assert (err.status, err.param, err.type) == (400, "top_p", "invalid_request_error")
    err = from_puhui(Unsupported("audio format 'aac' is not available", param="response_format"))
    assert (err.status, err.param) == (400, "response_format")
    err = from_puhui(DoesNotFit("too big", param="max_tokens"))
    assert (err.status, err.param) == (507, "max_tokens")


def test_a_caller_param_wins():
    assert from_puhui(BadInput("x", param="top_p"), param="messages").param == "messages"
    assert from_puhui(BadInput("x"), param="file").param == "file"


@pytest.mark.parametrize("message", ["temperature must be a number >= 0, got -1", "max_tokens must be >= 1",
                                     "the prompt has 9000 tokens and max_tokens 10", "prompt token id 5 is bad",
                                     "logit_bias has token id 9"])
def test_the_wording_does_not_decide_the_param(message):
    """A message that starts with (or speaks of) one parameter, raised about another: its param decides."""
    assert from_puhui(BadInput(message, param="messages[1].content")).param == "messages[1].content"
    assert from_puhui(BadInput(message, param="n")).param == "n"


@pytest.mark.parametrize("message", ["temperature must be a number >= 0, got -1", "the prompt has 9000 tokens"])
def test_no_param_means_none_whatever_the_wording(message):
    assert from_puhui(BadInput(message)).param is None
    assert not hasattr(serve_errors, "param_of")   # no guessing from the wording, ever


def test_model_not_found_defaults_to_model():
    err = from_puhui(ModelNotFound("no model named 'x'"))
    assert (err.status, err.param, err.code) == (404, "model", "model_not_found")
    assert from_puhui(ModelNotFound("no adapter 'a'", param="lora")).param == "lora"


def test_an_app_answers_a_sampling_error_with_its_param():
    """Through the installed handlers, as a route that builds SamplingParams from a body does."""
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    app = fastapi.FastAPI()
    serve_errors.install(app)

    @app.post("/sample")
    def route(body: dict):
        SamplingParams(**body)
        return {"ok": True}

    bad = {"max_tokens": 0, "temperature": -1, "top_k": -1, "top_p": 0, "min_p": 2, "repetition_penalty": 0,
           "presence_penalty": 3, "frequency_penalty": -3, "logit_bias": {"5": 500}, "stop": [""],
           "stop_token_ids": [-1], "seed": "x", "n": 0, "logprobs": 21, "echo": 1, "ignore_eos": "y",
           "json_mode": "y"}
    with TestClient(app) as client:
        for name, value in bad.items():
            r = client.post("/sample", json={name: value})
            assert r.status_code == 400, (name, r.text)
            assert r.json()["error"]["param"] == name, r.json()
        assert client.post("/sample", json={"temperature": 0.5}).json() == {"ok": True}


# ------------------------------------------------------------------------ other raises about one parameter

def test_audio_format_errors_name_response_format():
    from puhui.audio.encode import check_format
    from puhui.audio.transcript import Transcript

    with pytest.raises(BadInput) as err:
        check_format("xyz")
    assert err.value.param == "response_format"
    with pytest.raises(BadInput) as err:
        Transcript(text="hi", language="en", duration=1.0, segments=[]).format("docx")
    assert err.value.param == "response_format"


def test_transcription_errors_name_their_parameter():
    from puhui.audio.transcribe import WhisperTokens, greedy_decode

    tokens = WhisperTokens(eot=0, sot=1, transcribe=2, translate=3, no_timestamps=4, languages={"en": 5})
    with pytest.raises(BadInput) as err:
        tokens.prompt(True, language="xx")
    assert err.value.param == "language"
    with pytest.raises(BadInput) as err:
        tokens.prompt(True, language="en", task="summarise")
    assert err.value.param == "task"
    model = SimpleNamespace(config=SimpleNamespace(n_text_ctx=8, vocab_size=10))
    with pytest.raises(BadInput) as err:
        greedy_decode(model, torch.zeros(1, 2, 4), prompt=list(range(8)), eot=0)
    assert err.value.param == "prompt"


def test_chat_template_errors_name_the_messages():
    from puhui.text.chat_template import render_chat

    template = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}" \
               "{{ m.content }}{% endfor %}"
    with pytest.raises(BadInput) as err:
        render_chat(template, [{"role": "user", "content": "a"}, "not a message"])
    assert err.value.param == "messages[1]"
    with pytest.raises(BadInput) as err:
        render_chat(template, [{"role": "system", "content": "a"}])
    assert err.value.param == "messages"
    assert render_chat(template, [{"role": "user", "content": "a"}]) == "a"


def test_a_corrupt_file_is_not_a_parameter(tmp_path):
    from puhui.formats.gguf import read_gguf

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\x00" * 20)
    with pytest.raises(BadCheckpoint) as err:
        read_gguf(bad)
    assert err.value.param is None
