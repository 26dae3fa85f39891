"""The app factory: models loaded, one worker each, the OpenAI routes, /health and /metrics, and the
middleware that counts (metrics), guards (API keys) and limits (body size) every request."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.responses import Response

from .. import __version__
from ..errors import ModelNotFound, PuhuiError
from .auth import AuthMiddleware, BodyLimitMiddleware, KeyRing
from .errors import APIError, install
from .metrics import Metrics, MetricsMiddleware
from .schemas import Health
from .worker import EmbeddingWorker, GenerationWorker, TaskWorker

log = logging.getLogger("puhui.serve")

DEFAULT_MODELS = ("smollm2-135m-instruct", "all-minilm-l6-v2")
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_QUEUE = 64
DEFAULT_CONTEXT_CAP = 4096          # without --context: the model's window, at most this (KV cache memory)
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_BODY = 1 << 20          # 1 MiB
SERVED_TASKS = ("text-generation", "embeddings", "recommendation", "transcription", "speech", "detection")
DEFAULT_MAX_AUDIO_BODY = 25 << 20   # 25 MiB: uploads to /v1/audio/transcriptions and /translations
DEFAULT_MAX_IMAGE_BODY = 20 << 20   # 20 MiB: images sent to /v1/detections
# served by default too when their packages, and what runs them, are installed
DEFAULT_SPEECH_MODELS = (("whisper-tiny.en", "faster_whisper"), ("piper-joe", "onnxruntime"))


def default_models() -> list[str]:
    """DEFAULT_MODELS, the packaged speech models whose packages and runtime (the audio extra; espeak-ng for a
    voice) are installed, and the default detector once `puhui train detr` has made it."""
    import importlib.util
    import shutil

    from .. import packaged, store
    from ..tasks.detection import DEFAULT_NAME as DEFAULT_DETECTOR

    out = list(DEFAULT_MODELS)
    for name, runtime in DEFAULT_SPEECH_MODELS:
        default = packaged.find(name)
        if default is None or not default.installed() or importlib.util.find_spec(runtime) is None:
            continue
        if runtime == "onnxruntime" and shutil.which("espeak-ng") is None:
            continue
        out.append(name)
    try:
        if store.get(DEFAULT_DETECTOR).task == "detection":
            out.append(DEFAULT_DETECTOR)
    except PuhuiError:
        pass
    return out


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
        have = _model(worker).task
        if have != task:
            raise APIError(400, f"model {name!r} is a {have} model; {route} needs a {task} model", param="model",
                           code="wrong_model_task")
        return worker

    def generation_worker(self, name: str) -> GenerationWorker:
        return self.worker(name, "text-generation")

    def embedding_worker(self, name: str) -> EmbeddingWorker:
        return self.worker(name, "embeddings", "/v1/embeddings")

    def token_cache(self, name: str) -> dict:
        return self._token_caches.setdefault(name, {})

    def card(self, name: str):
        from .schemas import ModelCard

        worker = self.workers[name]
        model = _model(worker)
        manifest = getattr(model, "manifest", None)
        created = _epoch(getattr(manifest, "created", None)) or self.started
        aliases = sorted(a for a, real in self.aliases.items() if real == name and a != name)
        context = getattr(model, "context_length", None) or getattr(model, "max_length", None)
        return ModelCard(id=name, created=created, task=model.task, aliases=aliases, context_length=context)


def _model(worker):
    """The task object a worker runs."""
    return worker.generator if isinstance(worker, GenerationWorker) else worker.model


def _epoch(iso) -> int | None:
    try:
        return int(datetime.fromisoformat(str(iso)).timestamp())
    except (TypeError, ValueError):
        return None


def load_models(models, max_batch: int = DEFAULT_MAX_BATCH, context: int | None = None,
                quant: str | None = None) -> list:
    """Task objects for store names (aliases resolved); objects given already loaded are kept as they are."""
    from .. import store
    from ..tasks import load

    out = []
    for m in models:
        if not isinstance(m, str):
            out.append(m)
            continue
        manifest = store.get(m)
        if manifest.task == "text-generation":
            ctx = context
            if ctx is None:
                ctx = min(_model_context(manifest) or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP)
            out.append(load(manifest.name, max_batch=max_batch, context_length=ctx, quant=quant))
        elif manifest.task in SERVED_TASKS:
            out.append(load(manifest.name))
        else:
            raise ModelNotFound(f"model {manifest.name!r} has task {manifest.task!r}, which the server does not "
                                f"serve yet (it serves {', '.join(SERVED_TASKS)})")
    return out


def _model_context(manifest) -> int | None:
    """The model's own context window, from the GGUF facts in its manifest or its config.json."""
    ctx = (getattr(manifest, "extra", None) or {}).get("context_length")
    if not (isinstance(ctx, int) and ctx > 0):
        import json

        from .. import store
        try:
            config = json.loads((store.model_dir(manifest.name) / "config.json").read_text())
        except (OSError, ValueError):
            return None
        ctx = config.get("max_position_embeddings") or config.get("n_positions")
    return int(ctx) if isinstance(ctx, int) and ctx > 0 else None


def create_app(models=DEFAULT_MODELS, api_keys=None, max_queue: int = DEFAULT_MAX_QUEUE,
               max_batch: int = DEFAULT_MAX_BATCH, context: int | None = None,
               request_timeout: float = DEFAULT_TIMEOUT_S, max_body: int = DEFAULT_MAX_BODY,
               aliases: dict[str, str] | None = None, max_audio_body: int = DEFAULT_MAX_AUDIO_BODY,
               quant: str | None = None, max_image_body: int = DEFAULT_MAX_IMAGE_BODY) -> FastAPI:
    """The OpenAI-compatible app.

    models: store names or aliases (loaded now, so that a missing model fails here, not at the first request),
    or task objects already loaded (a TextGenerator's own max_batch and context stand). api_keys: none means
    no auth. max_batch sequences run at once per text model and max_queue more may wait (beyond: 429).
    context: the text models' context window (default: theirs, at most 4096 tokens). request_timeout: seconds
    a request may take (then 504). max_body: bytes of a request body (beyond: 413). aliases: default the
    settings' (OpenAI names -> the packaged defaults). max_audio_body (max_image_body): bytes of an audio (image)
    upload (beyond: 413)."""
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
        if model.task == "text-generation":
            workers[model.name] = GenerationWorker(model, max_queue=max_queue, metrics=metrics)
        elif model.task == "embeddings":
            workers[model.name] = EmbeddingWorker(model, max_queue=max_queue, metrics=metrics,
                                                  timeout=request_timeout)
        elif model.task in SERVED_TASKS:
            workers[model.name] = TaskWorker(model, max_queue=max_queue, metrics=metrics, timeout=request_timeout)
        else:
            raise ValueError(f"cannot serve a {model.task!r} model")
    if aliases is None:
        aliases = get_settings().aliases
    served = ServedModels(workers, aliases, request_timeout)
    keys = KeyRing(api_keys)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for w in workers.values():
            w.start()
        try:
            yield
        finally:
            for w in workers.values():
                w.stop()

    app = FastAPI(title="puhui", version=__version__, lifespan=lifespan,
                  description="An OpenAI-compatible API over the models of the puhui store. Every parameter is "
                              "honoured or refused with a 400 that names it; nothing is silently truncated.")
    app.state.served = served
    app.state.metrics = metrics
    app.state.keys = keys
    install(app)            # handlers, and the innermost middleware

    from .openai import router
    from .recommendation import router as recommendation_router
    app.include_router(router)
    app.include_router(recommendation_router)
    from .audio import UPLOAD_ROUTES
    from .audio import router as audio_router
    app.include_router(audio_router)
    from .vision import UPLOAD_ROUTES as IMAGE_ROUTES
    from .vision import router as vision_router
    app.include_router(vision_router)

    @app.get("/health", response_model=Health, summary="Liveness, and the models served")
    async def health() -> Health:
        return Health(models=list(workers))

    @app.get("/metrics", summary="Prometheus metrics (text format)",
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus(request: Request):
        return Response(metrics.render(), media_type=metrics.content_type)

    # the last added runs first: metrics see everything, then the key check, then the body limit
    app.add_middleware(BodyLimitMiddleware, limit=max_body,
                       route_limits={**{path: max_audio_body for path in UPLOAD_ROUTES},
                                     **{path: max_image_body for path in IMAGE_ROUTES}})
    app.add_middleware(AuthMiddleware, keys=keys)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=app.router.routes)
    return app
