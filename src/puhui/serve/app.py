"""The app factory: models loaded, one worker each, the OpenAI routes, /health and /metrics, and the
middleware that counts (metrics), refuses while shutting down (drain), guards (API keys) and limits (body size)
every request. `app.state.drain` is the app's shutdown (worker.Drain), which serve() runs on SIGTERM."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..errors import ModelNotFound
from ..tasks.defaults import DEFAULT_MODELS
from ..tasks.text import TextGenerator
from .auth import AuthMiddleware, BodyLimitMiddleware, DrainMiddleware, KeyRing, bearer_key
from .deps import ServedModels
from .errors import install
from .metrics import Metrics, MetricsMiddleware
from .schemas import Health
from .worker import Drain, GenerationWorker, TaskWorker

log = logging.getLogger("puhui.serve")

DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_QUEUE = 64
DEFAULT_CONTEXT_CAP = 4096          # without --context: the model's window, at most this (KV cache memory)
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_BODY = 1 << 20          # 1 MiB
DEFAULT_MAX_FILE_BODY = 100 << 20   # fine-tuning data held in memory as it arrives (OpenAI takes up to 512 MB)
SERVED_TASKS = ("text-generation", "embeddings", "recommendation", "transcription", "speech", "detection")
DEFAULT_MAX_AUDIO_BODY = 25 << 20   # 25 MiB: uploads to /v1/audio/transcriptions and /translations
DEFAULT_MAX_IMAGE_BODY = 20 << 20   # 20 MiB: images sent to /v1/detections


def load_models(models, max_batch: int = DEFAULT_MAX_BATCH, context: int | None = None,
                quant: str | None = None) -> list:
    """Task objects for store names (aliases resolved) through the task registry; objects given already
    loaded are kept as they are. Text models get the server's batch, context and quantisation options."""
    from .. import tasks

    out = []
    for m in models:
        if not isinstance(m, str):
            out.append(m)
            continue
        manifest = tasks.manifest(m)
        if manifest.task not in SERVED_TASKS:
            raise ModelNotFound(f"model {manifest.name!r} has task {manifest.task!r}, which the server does not "
                                f"serve yet (it serves {', '.join(SERVED_TASKS)})")
        options = {}
        if tasks.task_class(manifest.task) is TextGenerator:
            options = dict(max_batch=max_batch, context_length=context, quant=quant,
                           context_cap=None if context is not None else DEFAULT_CONTEXT_CAP)
        out.append(tasks.load(manifest, **options))
    return out


def serve_store_adapters(served: ServedModels) -> None:
    """Every LoRA adapter of the store made on a served text model is served too, on its base's engine; one
    whose base has changed since it was trained (another sha256) is left out, with a warning."""
    from .. import store

    for name, worker in served.workers.items():
        if not isinstance(worker, GenerationWorker):
            continue
        gen = worker.generator
        for m in store.adapters_of(name):
            problem = store.adapter_problem(m, getattr(gen, "manifest", None))
            if problem:
                log.warning("not serving adapter %s: %s", m.name, problem)
                continue
            gen.add_adapter(m.name, m.folder)
            served.adapters[m.name] = name
            rest = m.name[len(f"ft-{name}-"):]
            if m.name.startswith(f"ft-{name}-") and len(rest) > 9 and rest[-9] == "-":   # a fine-tuning job's
                served.aliases.setdefault(f"ft:{name}:{rest[:-9]}:{rest[-8:]}", m.name)


def create_app(models=DEFAULT_MODELS, api_keys=None, max_queue: int = DEFAULT_MAX_QUEUE,
               max_batch: int = DEFAULT_MAX_BATCH, context: int | None = None,
               request_timeout: float = DEFAULT_TIMEOUT_S, max_body: int = DEFAULT_MAX_BODY,
               aliases: dict[str, str] | None = None, max_audio_body: int = DEFAULT_MAX_AUDIO_BODY,
               quant: str | None = None, max_image_body: int = DEFAULT_MAX_IMAGE_BODY,
               max_file_body: int = DEFAULT_MAX_FILE_BODY) -> FastAPI:
    """The OpenAI-compatible app.

    models: store names or aliases (loaded now, so that a missing model fails here, not at the first request),
    or task objects already loaded (a TextGenerator's own max_batch and context stand). api_keys: none means
    no auth. max_batch sequences run at once per text model and max_queue more may wait (beyond: 429).
    context: the text models' context window (default: theirs, at most 4096 tokens). request_timeout: seconds
    a request may take (then 504). max_body: bytes of a request body (beyond: 413). aliases: default the
    settings' (OpenAI names -> the packaged defaults). max_audio_body (max_image_body): bytes of an audio (image)
    upload (beyond: 413); max_file_body: of a file upload (POST /v1/files: fine-tuning data)."""
    from ..settings import get_settings

    if max_queue < 0:
        raise ValueError("max_queue must be >= 0")
    if request_timeout <= 0:
        raise ValueError("request_timeout must be > 0")
    metrics = Metrics()
    workers: dict = {}
    for model in load_models(models, max_batch, context, quant):
        if model.name in workers:
            continue
        if isinstance(model, TextGenerator):
            workers[model.name] = GenerationWorker(model, max_queue=max_queue, metrics=metrics)
        elif model.task in SERVED_TASKS:
            workers[model.name] = TaskWorker(model, max_queue=max_queue, metrics=metrics, timeout=request_timeout)
        else:
            raise ValueError(f"cannot serve a {model.task!r} model")
    if aliases is None:
        aliases = get_settings().aliases
    served = ServedModels(workers, aliases, request_timeout)
    serve_store_adapters(served)
    keys = KeyRing(api_keys)
    drain = Drain(workers)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for w in workers.values():
            w.start()
        app.state.fine_tuning.start()
        try:
            yield
        finally:
            app.state.fine_tuning.stop()
            # serve() drained already; under another server (uvicorn's own, a test's) whatever is left still
            # gets its 503 here, as the workers stop
            drain.draining = True
            for w in workers.values():
                w.stop()

    app = FastAPI(title="puhui", version=__version__, lifespan=lifespan,
                  description="An OpenAI-compatible API over the models of the puhui store. Every parameter is "
                              "honoured or refused with a 400 that names it; nothing is silently truncated.")
    app.state.served = served
    app.state.metrics = metrics
    app.state.keys = keys
    app.state.drain = drain
    install(app)            # handlers, and the innermost middleware
    from .fine_tuning import make_queue
    app.state.fine_tuning = make_queue(app)

    from . import (adapters, audio, embeddings, files, fine_tuning, models as model_routes, recommendation,
                   responses, text, vision)
    for module in (model_routes, text, responses, embeddings, recommendation, audio, vision, adapters, files,
                   fine_tuning):
        app.include_router(module.router)

    @app.get("/health", response_model=Health, response_model_exclude_none=True,
             summary="Liveness, and the models served (to a valid key, when the server has keys)",
             responses={503: {"model": Health, "description": "The server is shutting down"}})
    async def health(request: Request):
        key = bearer_key(request.scope.get("headers", ())) if keys else None
        names = list(workers) if not keys or (key is not None and keys.valid(key)) else None
        if drain.draining:
            body = Health(status="shutting_down", models=names).model_dump(exclude_none=True)
            return JSONResponse(body, status_code=503, headers={"Retry-After": str(drain.retry_after())})
        return Health(models=names)

    @app.get("/metrics", summary="Prometheus metrics (text format)",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus(request: Request):
        return Response(metrics.render(), media_type=metrics.content_type)

    # the last added runs first: metrics see everything, then the drain, the key check, the body limit
    app.add_middleware(BodyLimitMiddleware, limit=max_body,
                       route_limits={**{path: max_audio_body for path in audio.UPLOAD_ROUTES},
                                     **{path: max_image_body for path in vision.UPLOAD_ROUTES},
                                     **{path: max_file_body for path in files.UPLOAD_ROUTES}})
    app.add_middleware(AuthMiddleware, keys=keys)
    app.add_middleware(DrainMiddleware, drain=drain)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    return app
