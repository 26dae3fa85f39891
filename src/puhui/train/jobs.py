"""Fine-tuning jobs as OpenAI's API has them (`client.fine_tuning.jobs.create/list/retrieve/cancel/list_events`):
run in the background one at a time, in the order they came, and kept in PUHUI_HOME/fine_tuning so that they
survive a restart: a job that was queued or running when the server stopped runs again when it starts (the
Trainer resumes from its last atomic checkpoint), a cancelled one stops at its next step.

A job is `{id}.json` (its object, rewritten atomically at each change of state) and `{id}.events.jsonl` (its
events, appended; a torn last line after a kill is skipped). What a job does is `train(job, emit, cancelled)`,
given by the caller (serve/fine_tuning.py: `puhui.train.finetune`), which returns the store name of the model
it made; the queue knows nothing of training.
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from ..atomic import write_atomic
from ..errors import BadInput, ModelNotFound, PuhuiError
from ..settings import get_settings

ACTIVE = ("validating_files", "queued", "running")
DONE = ("succeeded", "failed", "cancelled")


class Cancelled(Exception):
    """Raised inside a job's training when the job is cancelled (from its progress callback)."""


@dataclass
class Job:
    id: str
    model: str
    training_file: str
    created_at: int
    hyperparameters: dict
    validation_file: Optional[str] = None
    suffix: Optional[str] = None
    seed: int = 0
    status: str = "queued"
    object: str = "fine_tuning.job"
    fine_tuned_model: Optional[str] = None
    finished_at: Optional[int] = None
    trained_tokens: Optional[int] = None
    error: Optional[dict] = None
    result_files: list = field(default_factory=list)
    organization_id: str = "puhui"
    metrics: dict = field(default_factory=dict)      # final train / validation loss, tokens/s, peak memory
    method: Optional[dict] = None


def jobs_dir() -> Path:
    d = get_settings().home / "fine_tuning"
    d.mkdir(parents=True, exist_ok=True)
    return d


def new_id() -> str:
    return f"ftjob-{secrets.token_hex(12)}"


def save(job: Job) -> None:
    write_atomic(jobs_dir() / f"{job.id}.json", json.dumps(asdict(job)).encode())


def get(job_id: str) -> Job:
    if not isinstance(job_id, str) or not job_id.startswith("ftjob-") or "/" in job_id or len(job_id) > 64:
        raise ModelNotFound(f"no fine-tuning job {str(job_id)[:80]!r}", param="fine_tuning_job_id")
    try:
        return Job(**json.loads((jobs_dir() / f"{job_id}.json").read_text()))
    except FileNotFoundError:
        raise ModelNotFound(f"no fine-tuning job {job_id!r}", param="fine_tuning_job_id") from None


def list_jobs() -> list[Job]:
    """Every job, newest first."""
    out = []
    for p in jobs_dir().glob("ftjob-*.json"):
        try:
            out.append(Job(**json.loads(p.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(out, key=lambda j: (j.created_at, j.id), reverse=True)


def emit(job_id: str, message: str, level: str = "info", data: dict | None = None) -> dict:
    """Append an event to a job's log (OpenAI's fine_tuning.job.event)."""
    event = {"object": "fine_tuning.job.event", "id": f"ftevent-{secrets.token_hex(12)}",
             "created_at": int(time.time()), "level": level, "message": message, "type": "metrics" if data else
             "message", "data": data or {}}
    with open(jobs_dir() / f"{job_id}.events.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")
        f.flush()
    return event


def events(job_id: str) -> list[dict]:
    """A job's events, newest first."""
    get(job_id)
    path = jobs_dir() / f"{job_id}.events.jsonl"
    out = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue          # a line torn by a kill
    return out[::-1]


Train = Callable[[Job, Callable[..., dict], Callable[[], bool]], str]


class JobQueue:
    """One thread running the jobs one at a time; `submit`, `cancel`; `start` picks up the jobs a previous
    run left queued or running. `on_done(job)` is called after a job succeeds (the server serves its model)."""

    def __init__(self, train: Train, on_done: Callable[[Job], None] | None = None):
        self.train, self.on_done = train, on_done
        self._cond = threading.Condition()
        self._queue: list[str] = []
        self._cancelled: set[str] = set()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.current: str | None = None

    def start(self) -> None:
        for job in sorted(list_jobs(), key=lambda j: (j.created_at, j.id)):
            if job.status in ACTIVE:
                if job.status == "running":
                    emit(job.id, "the server restarted: the job resumes from its last checkpoint")
                job.status = "queued"
                save(job)
                self._queue.append(job.id)
        self._thread = threading.Thread(target=self._run, name="puhui-fine-tuning", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        """Stop taking jobs; a running one is left to resume at the next start (it is not cancelled)."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> Job:
        save(job)
        emit(job.id, f"Created fine-tuning job: {job.id}")
        with self._cond:
            self._queue.append(job.id)
            self._cond.notify_all()
        return job

    def cancel(self, job_id: str) -> Job:
        job = get(job_id)
        if job.status in DONE:
            raise BadInput(f"job {job_id} has already {'been cancelled' if job.status == 'cancelled' else job.status}",
                           param="fine_tuning_job_id")
        with self._cond:
            self._cancelled.add(job_id)
            if job_id in self._queue:
                self._queue.remove(job_id)
                self._finish(job, "cancelled")
                emit(job_id, "Fine-tuning job cancelled")
            elif job_id == self.current:
                emit(job_id, "Cancelling: the job stops at its next step")
        return get(job_id)

    def _finish(self, job: Job, status: str, **changes) -> None:
        job.status, job.finished_at = status, int(time.time())
        for k, v in changes.items():
            setattr(job, k, v)
        save(job)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job_id = self._queue.pop(0)
                self.current = job_id
            try:
                self._one(get(job_id))
            finally:
                self.current = None

    def _one(self, job: Job) -> None:
        job.status = "running"
        save(job)
        emit(job.id, "Fine-tuning job started")

        def cancelled() -> bool:
            return job.id in self._cancelled or self._stop

        try:
            name = self.train(job, lambda *a, **k: emit(job.id, *a, **k), cancelled)
        except Cancelled:
            if self._stop and job.id not in self._cancelled:
                return                      # the server stops: the job stays running, resumed next start
            self._finish(job, "cancelled")
            emit(job.id, "Fine-tuning job cancelled")
            return
        except PuhuiError as e:
            self._finish(job, "failed", error={"code": e.code or "invalid_training_file" if e.param == "file" else
                                               e.code or "failed", "message": str(e), "param": e.param})
            emit(job.id, f"Fine-tuning job failed: {e}", level="error")
            return
        except Exception as e:  # noqa: BLE001 - a job's crash is its failure, the queue goes on
            self._finish(job, "failed", error={"code": "server_error", "message": f"{type(e).__name__}: {e}",
                                               "param": None})
            emit(job.id, f"Fine-tuning job failed: {type(e).__name__}: {e}", level="error")
            return
        job = get(job.id)
        self._finish(job, "succeeded", fine_tuned_model=name)
        emit(job.id, f"New fine-tuned model created: {name}")
        if self.on_done is not None:
            self.on_done(job)
        emit(job.id, "The job has successfully completed")
