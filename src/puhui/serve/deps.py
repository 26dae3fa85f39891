"""What every router shares: the served models (one worker each, aliases resolved), the error responses
documented on every route, and the legacy engine-route check. Routers import this module, never each other."""
from __future__ import annotations

import time
from datetime import datetime

from fastapi import Request

from .errors import APIError
from .schemas import ErrorResponse, ModelCard
from .worker import GenerationWorker, TaskWorker

ERRORS = {s: {"model": ErrorResponse, "description": d} for s, d in (
    (400, "A parameter is invalid or not supported (the error names it)."),
    (401, "Missing or wrong API key."), (404, "Unknown model."), (413, "Body too large."),
    (429, "Queue full: retry after the Retry-After header's seconds."), (500, "Server error."),
    (504, "The request timed out."))}


class ServedModels:
    """The models of one server, by real name, each with its worker; aliases resolve to them."""

    def __init__(self, workers: dict, aliases: dict[str, str], request_timeout: float):
        self.workers = workers
        self.aliases = dict(aliases)
        self.request_timeout = request_timeout
        self.started = int(time.time())
        self._token_caches: dict[str, dict] = {}

    def real_name(self, name: str) -> str:
        real = self.aliases.get(name, name)
        if real not in self.workers:
            alias = f" (an alias of {real!r})" if real != name else ""
            raise APIError(404, f"The model {name!r}{alias} does not exist on this server; it serves: "
                                f"{', '.join(self.workers) or 'nothing'} (see GET /v1/models)",
                           "invalid_request_error", param="model", code="model_not_found")
        return real

    def worker(self, name: str, task: str, route: str = "this route"):
        """The worker of model `name` (or alias), which must be a `task` model (else a 400 saying so)."""
        worker = self.workers[self.real_name(name)]
        have = worker_model(worker).task
        if have != task:
            raise APIError(400, f"model {name!r} is a {have} model; {route} needs a {task} model", param="model",
                           code="wrong_model_task")
        return worker

    def generation_worker(self, name: str) -> GenerationWorker:
        return self.worker(name, "text-generation")

    def token_cache(self, name: str) -> dict:
        return self._token_caches.setdefault(name, {})

    def card(self, name: str) -> ModelCard:
        model = worker_model(self.workers[name])
        manifest = getattr(model, "manifest", None)
        created = _epoch(getattr(manifest, "created", None)) or self.started
        aliases = sorted(a for a, real in self.aliases.items() if real == name and a != name)
        context = getattr(model, "context_length", None) or getattr(model, "max_length", None)
        return ModelCard(id=name, created=created, task=model.task, aliases=aliases, context_length=context)


def served_models(request: Request) -> ServedModels:
    return request.app.state.served


def worker_model(worker: GenerationWorker | TaskWorker):
    """The task object a worker runs."""
    return worker.generator if isinstance(worker, GenerationWorker) else worker.model


def engine_model(engine: str, model: str | None) -> str:
    """The model of a legacy /v1/engines/{engine}/... route: the engine, unless the body names another."""
    if model is not None and model != engine:
        raise APIError(400, f"model {model!r} in the body differs from the engine {engine!r} in the URL",
                       param="model", code="invalid_value")
    return engine


def _epoch(iso) -> int | None:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp())
    except (TypeError, ValueError):
        return None
