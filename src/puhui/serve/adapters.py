"""LoRA adapters loaded and unloaded while serving, as vLLM's routes do it: POST /v1/load_lora_adapter
{"lora_name", "lora_path"} and POST /v1/unload_lora_adapter {"lora_name"}. An adapter runs on its base's
engine, in the same batches as the base's own requests (engine/adapters.py), and is then a model of
/v1/models with its `parent`.

`lora_path` is a PEFT folder on the server's disk (adapter_config.json + adapter_model.safetensors: no pickle is
ever read); without it, `lora_name` is an adapter of the store (`puhui finetune`, `puhui models import`).
`base_model` (an extension) picks the base when the server serves several text models; by default the one the
adapter names (its store manifest, or adapter_config.json's base_model_name_or_path), or the only one served."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from ..errors import PuhuiError
from .auth import bearer
from .deps import ERRORS, served_models, worker_model
from .errors import APIError, from_puhui, quoted
from .schemas import Closed
from .worker import GenerationWorker

router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=ERRORS, tags=["adapters"])


class LoadAdapter(Closed):
    lora_name: str
    lora_path: Optional[str] = None
    base_model: Optional[str] = None
    load_inplace: Optional[bool] = None      # vLLM's: replace an adapter of that name (ours always may)


class UnloadAdapter(Closed):
    lora_name: str
    lora_int_id: Optional[int] = None        # vLLM's; names are what we go by


@router.post("/load_lora_adapter", response_class=PlainTextResponse,
             summary="Serve a LoRA adapter beside its base, in the same batches")
async def load_lora_adapter(body: LoadAdapter, request: Request):
    served = served_models(request)
    if body.lora_name in served.workers:
        raise APIError(400, f"{quoted(body.lora_name)} is the name of a served model", param="lora_name",
                       code="invalid_value")
    folder, named_base = await run_in_threadpool(_find, body)
    base = _base(served, body.base_model or named_base, named_base is not None and body.base_model is None)
    gen = worker_model(served.workers[base])
    try:
        await run_in_threadpool(gen.add_adapter, body.lora_name, folder)
    except PuhuiError as e:
        raise from_puhui(e, param="lora_path" if e.param == "adapter" else None) from None
    served.adapters[body.lora_name] = base
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/unload_lora_adapter", response_class=PlainTextResponse, summary="Stop serving a LoRA adapter")
async def unload_lora_adapter(body: UnloadAdapter, request: Request):
    served = served_models(request)
    base = served.adapters.get(body.lora_name)
    if base is None:
        raise APIError(404, f"no adapter {quoted(body.lora_name)} is served (see GET /v1/models)", param="lora_name",
                       code="model_not_found")
    try:
        worker_model(served.workers[base]).remove_adapter(body.lora_name)
    except PuhuiError as e:
        raise from_puhui(e) from None
    served.adapters.pop(body.lora_name, None)
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully."


def _find(body: LoadAdapter) -> tuple[Path, str | None]:
    """(the adapter's folder, the base it names) of a request."""
    if body.lora_path is None:
        from .. import store

        try:
            m = store.get(body.lora_name)
        except PuhuiError:
            raise APIError(404, f"no adapter {quoted(body.lora_name)} in the store; give lora_path (a PEFT "
                                f"adapter folder)", param="lora_name", code="model_not_found") from None
        info = m.extra.get("adapter")
        if not isinstance(info, dict):
            raise APIError(400, f"store model {quoted(body.lora_name)} is not a LoRA adapter", param="lora_name",
                           code="invalid_value")
        return m.folder, info.get("base")
    folder = Path(body.lora_path)
    if not (folder / "adapter_config.json").is_file():
        raise APIError(400, f"lora_path {quoted(body.lora_path)} is not a LoRA adapter folder (no "
                            f"adapter_config.json)", param="lora_path", code="invalid_value")
    try:
        named = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        named = None
    return folder, named if isinstance(named, str) else None


def _base(served, name: str | None, only_a_hint: bool) -> str:
    """The served text model an adapter goes on."""
    texts = [n for n, w in served.workers.items() if isinstance(w, GenerationWorker)]
    if name is not None:
        real = served.aliases.get(name, name)
        if real in texts:
            return real
        if not only_a_hint:
            raise APIError(400, f"base_model {quoted(name)} is not a text model served here (it serves: "
                                f"{', '.join(texts) or 'none'})", param="base_model", code="invalid_value")
    if len(texts) == 1:
        return texts[0]
    raise APIError(400, "this server serves several text models: say which one the adapter runs on (base_model)",
                   param="base_model", code="missing_required_parameter")
