"""GET /v1/models and /v1/models/{id}: the models this server serves, by their real ids (an alias finds its
model, and each card lists its aliases)."""
from __future__ import annotations

from fastapi import APIRouter, Request, Security

from .auth import bearer
from .deps import ERRORS, served_models
from .schemas import ModelCard, ModelList

router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=ERRORS, tags=["models"])


@router.get("/models", response_model=ModelList, summary="The models this server serves (real ids)")
async def list_models(request: Request) -> ModelList:
    served = served_models(request)
    return ModelList(data=[served.card(name) for name in served.names()])


@router.get("/models/{model_id}", response_model=ModelCard, summary="One model, by id or alias")
async def get_model(model_id: str, request: Request) -> ModelCard:
    served = served_models(request)
    return served.card(served.real_name(model_id))
