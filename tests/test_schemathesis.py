"""schemathesis generates requests from /openapi.json, valid and invalid: none may get a 5xx. The text model is
a tiny random one over the real engine and tokenizer (fast); the embeddings model is the packaged one.

The embeddings and model routes also get schemathesis' positive_data_acceptance: a request the document calls
valid is answered (2xx, or 404 for a model that is not served), except the refusals it states in words because
a static schema cannot (STATED_REFUSALS). The text routes are not held to it yet: their not-implemented fields
are typed "anything" in the document and refused unless neutral."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error, positive_data_acceptance  # noqa: E402

from serve_support import LiveServer, need_models, real_models, tiny_generator  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live_url():
    need_models()
    from puhui.serve import create_app

    _, emb = real_models()
    gen = tiny_generator(max_batch=4, context=256)
    aliases = {"gpt-3.5-turbo": "tiny-random", "text-davinci-003": "tiny-random", "text-embedding-ada-002": emb.name}
    with LiveServer(create_app([gen, emb], max_queue=16, request_timeout=30, aliases=aliases)) as url:
        yield url


def _document() -> dict:
    """The app's OpenAPI document (it does not depend on the models served: an app of none makes it)."""
    from puhui.serve import create_app

    return create_app([], aliases={}).openapi()


# the document is the app's own, read at collection; the requests go to the live server
schema = schemathesis.openapi.from_dict(_document())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, live_url):
    case.call_and_validate(base_url=live_url, checks=[not_a_server_error], timeout=60)


# (param, code) of the 400s the document states in a field's description: `dimensions` other than the model's own
# (a bound that depends on the model), a text beyond the model's limit of tokens, a legacy route's body model
# that is not its engine's (OpenAPI cannot tie a body field to a path parameter)
STATED_REFUSALS = {("dimensions", "unsupported_value"), ("input", "context_length_exceeded"),
                   ("model", "invalid_value")}
EMBEDDER = "text-embedding-ada-002"     # the served embeddings model, by its alias


def accepted_unless_stated(ctx, response, case):
    """positive_data_acceptance, less the refusals the document states."""
    if response.status_code == 400:
        err = response.json().get("error") or {}
        if (err.get("param"), err.get("code")) in STATED_REFUSALS:
            return True
    return positive_data_acceptance(ctx, response, case)


@schema.include(path_regex="embeddings|models|health").parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_schema_valid_requests_are_accepted(case, live_url):
    # aimed at the served model (a model name is any string to the document): the requests reach it, rather
    # than the 404 of a random name
    if case.path_parameters and "engine" in case.path_parameters:
        case.path_parameters["engine"] = EMBEDDER
    elif case.operation.path == "/v1/embeddings" and isinstance(case.body, dict):
        case.body["model"] = EMBEDDER
    case.call_and_validate(base_url=live_url, checks=[not_a_server_error, accepted_unless_stated], timeout=60)


def test_the_fuzzing_reached_the_models(live_url):
    """Not only 4xx: some generated requests were valid and ran on the models."""
    import httpx

    metrics = httpx.get(f"{live_url}/metrics").text
    ok = [line for line in metrics.splitlines() if line.startswith("puhui_requests_total")
          and 'status="200"' in line and ("completions" in line or "embeddings" in line)]
    assert ok, metrics
    assert 'status="5' not in metrics
