"""The recommendation routes: POST /v1/recommendations (top-k items for a user) and POST /v1/ctr (scores of
feature rows), over the trained recommenders the server was started with (`puhui serve --model NAME`)."""
from __future__ import annotations

from typing import Any, Optional, Union

from fastapi import APIRouter, Request, Security
from pydantic import Field

from .auth import bearer
from .deps import ERRORS, served_models
from .schemas import Closed

MAX_K = 1000
MAX_ROWS = 10_000

router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=ERRORS, tags=["recommendation"])


class RecommendationRequest(Closed):
    model: str = Field(..., description="A recommendation model served here (see GET /v1/models).")
    user: Union[str, int] = Field(..., description="The user id as in the training data; an unknown user gets "
                                                   "the most popular items (cold_start: true).")
    k: int = Field(10, ge=1, le=MAX_K, description="How many items.")
    exclude_seen: bool = Field(False, description="Leave out the items the user interacted with in training.")


class RecommendedItem(Closed):
    item: str
    name: Optional[str] = None
    score: float


class RecommendationResponse(Closed):
    object: str = "recommendation"
    model: str
    user: Union[str, int]
    k: int
    exclude_seen: bool
    cold_start: bool
    note: Optional[str] = None
    items: list[RecommendedItem]


class CTRRequest(Closed):
    model: str = Field(..., description="A recommendation model served here.")
    rows: list[dict[str, Any]] = Field(..., min_length=1, max_length=MAX_ROWS,
                                       description="Objects of feature column -> value; user (item) features "
                                                   "missing from a row come from the catalogue of its user (item).")


class CTRResponse(Closed):
    object: str = "list"
    model: str
    scores: list[float] = Field(..., description="The click (like) probability of each row, in order.")


@router.post("/recommendations", response_model=RecommendationResponse, summary="Top-k items for a user")
async def recommendations(body: RecommendationRequest, request: Request):
    worker = served_models(request).worker(body.model, "recommendation", "/v1/recommendations")
    out = await worker.run(lambda rec: rec.recommend(body.user, k=body.k, exclude_seen=body.exclude_seen))
    return {"object": "recommendation", **out}


@router.post("/ctr", response_model=CTRResponse, summary="Click-through probabilities of feature rows")
async def ctr(body: CTRRequest, request: Request):
    worker = served_models(request).worker(body.model, "recommendation", "/v1/ctr")
    scores = await worker.run(lambda rec: rec.ctr_scores(body.rows))
    return {"object": "list", "model": worker.name, "scores": scores}
