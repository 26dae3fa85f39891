"""What every router shares: the served models (one worker each, aliases resolved), the error responses
documented on every route, and the legacy engine-route check. Routers import this module, never each other."""
from __future__ import annotations

import time
from datetime import datetime

from fastapi import Request

from .errors import APIError, quoted
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
        self.adapters: dict[str, str] = {}      # LoRA adapter name -> the text model it is served on
        self.aliases = dict(aliases)
        self.request_timeout = request_timeout
        self.started = int(time.time())
        self._token_caches: dict[str, dict] = {}

    def real_name(self, name: str) -> str:
        """The served model (or adapter) a name or alias is; a 404 naming what is served otherwise."""
        real = self.aliases.get(name, name)
        if real not in self.workers and real not in self.adapters:
            alias = f" (an alias of {quoted(real)})" if real != name else ""
            raise APIError(404, f"The model {quoted(name)}{alias} does not exist on this server; it serves: "
                                f"{', '.join([*self.workers, *self.adapters]) or 'nothing'} (see GET /v1/models)",
                           "invalid_request_error", param="model", code="model_not_found")
        return real

    def worker(self, name: str, task: str, route: str = "this route"):
        """The worker of model `name` (or alias; of an adapter: its base's), which must be a `task` model (else a
        400 saying so)."""
        real = self.real_name(name)
        worker = self.workers[self.adapters.get(real, real)]
        have = worker_model(worker).task
        if have != task:
            raise APIError(400, f"model {quoted(name)} is {_a(have)} model; {route} needs {_a(task)} model",
                           param="model", code="wrong_model_task")
        return worker

    def generation_worker(self, name: str) -> GenerationWorker:
        return self.worker(name, "text-generation")

    def adapter(self, name: str) -> str | None:
        """The LoRA adapter a model name asks for (None: a base model)."""
        real = self.aliases.get(name, name)
        return real if real in self.adapters else None

    def names(self) -> list[str]:
        """Every served id: the models, then the adapters."""
        return [*self.workers, *sorted(self.adapters)]

    def token_cache(self, name: str) -> dict:
        return self._token_caches.setdefault(name, {})

    def card(self, name: str) -> ModelCard:
        if name in self.adapters:
            base = self.card(self.adapters[name])
            return base.model_copy(update={"id": name, "parent": base.id, "aliases": sorted(
                a for a, real in self.aliases.items() if real == name and a != name)})
        model = worker_model(self.workers[name])
        manifest = getattr(model, "manifest", None)
        created = _epoch(getattr(manifest, "created", None)) or self.started
        aliases = sorted(a for a, real in self.aliases.items() if real == name and a != name)
        context = getattr(model, "context_length", None) or getattr(model, "max_length", None)
        dimensions = getattr(model, "dim", None) if model.task == "embeddings" else None
        return ModelCard(id=name, created=created, task=model.task, aliases=aliases, context_length=context,
                         capabilities=list(getattr(model, "capabilities", ())), dimensions=dimensions)


def served_models(request: Request) -> ServedModels:
    return request.app.state.served


def worker_model(worker: GenerationWorker | TaskWorker):
    """The task object a worker runs."""
    return worker.generator if isinstance(worker, GenerationWorker) else worker.model


def engine_model(engine: str, model: str | None, served: ServedModels) -> str:
    """The model of a legacy /v1/engines/{engine}/... route: the engine (a 404 when it is not served, whatever the
    body says). A model in the body must be the engine's name, else a 400 (two names, even of one served model, are
    a confused request): the document states it in words, as OpenAPI cannot tie a body field to a path parameter."""
    served.real_name(engine)
    if model is not None and model != engine:
        raise APIError(400, f"model {quoted(model)} in the body differs from the engine {quoted(engine)} in the URL "
                            f"(leave model out, or send the engine's name)", param="model", code="invalid_value")
    return engine


def _a(word: str) -> str:
    """'a text-generation', 'an embeddings': the article a task's name takes."""
    return f"{'an' if word[:1].lower() in tuple('aeiou') else 'a'} {word}"


def _epoch(iso) -> int | None:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp())
    except (TypeError, ValueError):
        return None
