"""schemathesis generates requests from /openapi.json, valid and invalid: none may get a 5xx. The text model is
a tiny random one over the real engine and tokenizer (fast); the embeddings model is the packaged one."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

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


def test_the_fuzzing_reached_the_models(live_url):
    """Not only 4xx: some generated requests were valid and ran on the models."""
    import httpx

    metrics = httpx.get(f"{live_url}/metrics").text
    ok = [line for line in metrics.splitlines() if line.startswith("puhui_requests_total")
          and 'status="200"' in line and ("completions" in line or "embeddings" in line)]
    assert ok, metrics
    assert 'status="5' not in metrics
