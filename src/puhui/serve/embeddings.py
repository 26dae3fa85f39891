"""POST /v1/embeddings (and the legacy engine route): texts to vectors, float lists or base64. An input beyond
the model's limit is refused, naming it, never cut; so is an empty string (as OpenAI does: a vector of nothing
means nothing), and token ids (each model has its own tokenizer)."""
from __future__ import annotations

import base64

from fastapi import APIRouter, Request, Security

from .auth import bearer
from .deps import ERRORS, engine_model, served_models
from .errors import APIError, unsupported
from .schemas import MAX_EMBEDDING_INPUTS, EmbeddingRequest, EmbeddingResponse, LegacyEmbeddingRequest

router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=ERRORS)


@router.post("/embeddings", response_model=EmbeddingResponse, summary="Embed texts")
async def embeddings(body: EmbeddingRequest, request: Request):
    return await _embeddings(body, request)


@router.post("/engines/{engine}/embeddings", response_model=EmbeddingResponse,
             summary="Legacy route of openai<1 clients: the model is the engine in the path")
async def engine_embeddings(engine: str, body: LegacyEmbeddingRequest, request: Request):
    body.model = engine_model(engine, body.model, served_models(request))
    return await _embeddings(body, request)


async def _embeddings(body: EmbeddingRequest, request: Request):
    worker = served_models(request).worker(body.model, "embeddings", "/v1/embeddings")
    emb = worker.model
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise APIError(400, "input is empty: send a string or a non-empty list of strings", param="input",
                       code="invalid_value")
    if not all(isinstance(t, str) for t in texts):
        raise unsupported("input", "embeddings of token ids: send the text (each model has its own tokenizer)")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise APIError(400, f"input has {len(texts)} items, more than {MAX_EMBEDDING_INPUTS}", param="input",
                       code="invalid_value")
    empty = next((i for i, t in enumerate(texts) if not t), None)
    if empty is not None:
        where = "input" if isinstance(body.input, str) else f"input[{empty}]"
        raise APIError(400, f"{where} is an empty string: send text to embed", param="input", code="invalid_value")
    if body.dimensions is not None and body.dimensions != emb.dim:
        raise APIError(400, f"dimensions {body.dimensions}: {emb.name} makes vectors of {emb.dim} dimensions only "
                            f"(it was not trained to shorten them); send {emb.dim} or leave dimensions out",
                       param="dimensions", code="unsupported_value")
    result = await worker.run(lambda model: model.encode(texts, truncate=False))
    if body.encoding_format == "base64":
        data = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in result.vectors]
    else:
        data = [v.tolist() for v in result.vectors]
    total = int(sum(result.tokens))
    return {"object": "list", "model": emb.name, "usage": {"prompt_tokens": total, "total_tokens": total},
            "data": [{"object": "embedding", "index": i, "embedding": d} for i, d in enumerate(data)]}
