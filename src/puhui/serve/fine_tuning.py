"""OpenAI's fine-tuning API, so that `client.fine_tuning.jobs.create/list/retrieve/cancel/list_events` work
unchanged: POST /v1/fine_tuning/jobs, GET /v1/fine_tuning/jobs[/{id}[/events|/checkpoints]],
POST /v1/fine_tuning/jobs/{id}/cancel.

A job fine-tunes a served text model with LoRA (puhui.train.finetune) on an uploaded file (serve/files.py), in
the background, one at a time (train/jobs.py: queued, survives a restart, cancellable). When it succeeds its
adapter is in the store and is served at once, beside its base, as `ft:BASE:SUFFIX:ID` (OpenAI's form of the
name; the store keeps it as `ft-BASE-SUFFIX-ID`, which is served too). Hyperparameters: n_epochs, batch_size,
learning_rate_multiplier (of puhui's LoRA learning rate), each a number or "auto"; method: supervised only.
"""
from __future__ import annotations

import re
import time
from typing import Literal, Optional, Union

from fastapi import APIRouter, Request, Security
from pydantic import Field

from ..errors import PuhuiError
from ..progress import Progress
from ..store import files
from ..train import jobs
from .auth import bearer
from .deps import ERRORS, served_models, worker_model
from .errors import APIError, from_puhui, unsupported
from .schemas import Closed

router = APIRouter(prefix="/v1/fine_tuning", dependencies=[Security(bearer)], responses=ERRORS,
                   tags=["fine-tuning"])

BASE_LR = 2e-4          # puhui's LoRA learning rate; learning_rate_multiplier scales it
AUTO = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0}
_SUFFIX = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Hyperparameters(Closed):
    n_epochs: Union[Literal["auto"], int, None] = Field(None, description="Epochs (1-50), or auto (3).")
    batch_size: Union[Literal["auto"], int, None] = Field(None, description="Rows a step (1-256), or auto (4).")
    learning_rate_multiplier: Union[Literal["auto"], float, None] = Field(
        None, description=f"Times puhui's LoRA learning rate {BASE_LR}, or auto (1).")


class Supervised(Closed):
    hyperparameters: Optional[Hyperparameters] = None


class Method(Closed):
    type: str
    supervised: Optional[Supervised] = None
    dpo: Optional[dict] = None
    reinforcement: Optional[dict] = None


class JobRequest(Closed):
    model: str = Field(..., description="A text model served here (its LoRA adapter is what the job makes).")
    training_file: str = Field(..., description="The id of an uploaded fine-tune file (POST /v1/files).")
    validation_file: Optional[str] = None
    hyperparameters: Optional[Hyperparameters] = None
    suffix: Optional[str] = Field(None, description="Up to 64 letters, digits, '.', '_' or '-', in the model's "
                                                    "name.")
    seed: Optional[int] = None
    method: Optional[Method] = None
    integrations: Optional[list] = None
    metadata: Optional[dict[str, str]] = None


@router.post("/jobs", summary="Create a fine-tuning job (LoRA on a served model)")
async def create_job(body: JobRequest, request: Request):
    served = served_models(request)
    base = served.real_name(body.model)
    if base in served.adapters:
        raise APIError(400, f"{body.model!r} is an adapter; fine-tune its base {served.adapters[base]!r}",
                       param="model", code="invalid_value")
    served.worker(base, "text-generation", "fine-tuning")
    for param, file_id in (("training_file", body.training_file), ("validation_file", body.validation_file)):
        if file_id is None:
            continue
        try:
            obj = files.get(file_id)
        except PuhuiError:
            raise APIError(400, f"{param} {file_id[:80]!r} is not an uploaded file", param=param,
                           code="invalid_file") from None
        if obj.purpose != "fine-tune":
            raise APIError(400, f"{param} {file_id!r} was uploaded with purpose {obj.purpose!r}, not fine-tune",
                           param=param, code="invalid_file")
    if body.integrations:
        raise unsupported("integrations", "no integrations (wandb ...) are run here")
    hyper = body.hyperparameters
    if body.method is not None:
        if body.method.type != "supervised":
            raise unsupported("method.type", f"{body.method.type!r} fine-tuning: only supervised (LoRA)")
        if hyper is not None and body.method.supervised is not None:
            raise APIError(400, "hyperparameters twice: send them in method.supervised only", param="hyperparameters",
                           code="invalid_value")
        hyper = hyper or (body.method.supervised.hyperparameters if body.method.supervised else None)
    if body.suffix is not None and not _SUFFIX.fullmatch(body.suffix):
        raise APIError(400, "suffix: up to 64 letters, digits, '.', '_' or '-'", param="suffix", code="invalid_value")
    values = _hyperparameters(hyper)
    job = jobs.Job(jobs.new_id(), base, body.training_file, int(time.time()), values, body.validation_file,
                   body.suffix, body.seed if body.seed is not None else 42,
                   method={"type": "supervised", "supervised": {"hyperparameters": values}})
    request.app.state.fine_tuning.submit(job)
    return _object(job)


@router.get("/jobs", summary="The fine-tuning jobs, newest first")
async def list_jobs(after: Optional[str] = None, limit: int = 20):
    data = [_object(j) for j in jobs.list_jobs()]
    if after is not None:
        ids = [j["id"] for j in data]
        data = data[ids.index(after) + 1:] if after in ids else []
    return {"object": "list", "data": data[:max(0, limit)], "has_more": len(data) > limit}


@router.get("/jobs/{job_id}", summary="One fine-tuning job")
async def retrieve_job(job_id: str):
    return _object(_get(job_id))


@router.post("/jobs/{job_id}/cancel", summary="Cancel a fine-tuning job (a running one stops at its next step)")
async def cancel_job(job_id: str, request: Request):
    _get(job_id)
    try:
        return _object(request.app.state.fine_tuning.cancel(job_id))
    except PuhuiError as e:
        raise from_puhui(e, param="fine_tuning_job_id") from None


@router.get("/jobs/{job_id}/events", summary="A fine-tuning job's events, newest first")
async def list_events(job_id: str, after: Optional[str] = None, limit: int = 20):
    _get(job_id)
    data = jobs.events(job_id)
    if after is not None:
        ids = [e["id"] for e in data]
        data = data[ids.index(after) + 1:] if after in ids else []
    return {"object": "list", "data": data[:max(0, limit)], "has_more": len(data) > limit}


@router.get("/jobs/{job_id}/checkpoints", summary="A finished job's checkpoint (its adapter)")
async def list_checkpoints(job_id: str):
    job = _get(job_id)
    data = []
    if job.status == "succeeded":
        data.append({"object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{job.id[6:]}",
                     "created_at": job.finished_at, "fine_tuned_model_checkpoint": job.fine_tuned_model,
                     "fine_tuning_job_id": job.id, "metrics": job.metrics,
                     "step_number": job.metrics.get("steps", 0)})
    return {"object": "list", "data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None}


def openai_name(job: jobs.Job) -> str:
    return f"ft:{job.model}:{job.suffix or 'puhui'}:{job.id[6:14]}"


def store_name(job: jobs.Job) -> str:
    return openai_name(job).replace(":", "-")


def _object(job: jobs.Job) -> dict:
    d = {k: v for k, v in vars(job).items() if k != "metrics"}
    if job.fine_tuned_model:
        d["fine_tuned_model"] = openai_name(job)
    d["estimated_finish"] = None
    return d


def _get(job_id: str) -> jobs.Job:
    try:
        return jobs.get(job_id)
    except PuhuiError as e:
        raise from_puhui(e, param="fine_tuning_job_id") from None


def _hyperparameters(h: Hyperparameters | None) -> dict:
    values = dict(AUTO)
    limits = {"n_epochs": (1, 50), "batch_size": (1, 256), "learning_rate_multiplier": (1e-3, 100)}
    for key, (lo, hi) in limits.items():
        v = getattr(h, key, None) if h is not None else None
        if v is None or v == "auto":
            continue
        if isinstance(v, bool) or not lo <= v <= hi:
            raise APIError(400, f"hyperparameters.{key} must be in [{lo}, {hi}] or auto, not {v!r}",
                           param=f"hyperparameters.{key}", code="invalid_value")
        values[key] = v
    return values


def make_queue(app) -> jobs.JobQueue:
    """The app's job queue: each job trains with puhui.train.finetune, and its adapter is served when done."""
    served = app.state.served

    def train(job: jobs.Job, emit, cancelled) -> str:
        from ..train.finetune import finetune

        def progress(p: Progress) -> None:
            if cancelled():
                raise jobs.Cancelled()
            if p.message:
                emit(p.task)
            elif p.info and p.finished:
                emit(f"{p.task}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in p.info.items()), data=dict(p.info))

        h = job.hyperparameters
        result = finetune(job.model, files.content_path(job.training_file), name=store_name(job),
                          validation=files.content_path(job.validation_file) if job.validation_file else None,
                          epochs=int(h["n_epochs"]), batch_size=int(h["batch_size"]),
                          lr=BASE_LR * float(h["learning_rate_multiplier"]), seed=job.seed, resume=True,
                          progress=progress)
        fresh = jobs.get(job.id)
        fresh.metrics = _metrics(result)
        fresh.trained_tokens = fresh.metrics.get("trained_tokens")
        jobs.save(fresh)
        return store_name(job)

    def on_done(job: jobs.Job) -> None:
        from .. import store

        worker = served.workers.get(job.model)
        if worker is None:
            return
        name = store_name(job)
        worker_model(worker).add_adapter(name, store.get(name).folder)
        served.adapters[name] = job.model
        served.aliases[openai_name(job)] = name

    return jobs.JobQueue(train, on_done)


def _metrics(result) -> dict:
    d = result if isinstance(result, dict) else dict(vars(result)) if hasattr(result, "__dict__") else {}
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}
