"""POST /v1/detections: the objects a detection model finds in an image, as labels, scores and pixel boxes.

The image comes either as a multipart upload (`file`, with `model` and `threshold` as form fields, as the audio
routes take theirs) or in a JSON body as base64 (`image`: the bytes, or a data: URL). Uploads may be up to
create_app's max_image_body (default 20 MiB, OpenAI's limit for images); beyond, a 413. An image of more than
MAX_PIXELS pixels, or of more than its upload's size accounts for (above 4 MP, 4,000 pixels a byte), is refused
from its header, before it is decoded (a decompression bomb: code image_too_large); bytes that are no image, or
truncated or corrupt image data, are refused before any model work (decoded whole and checked: invalid_image).
Each is a 400 naming the field (`file` or `image`). The route reads the request and shapes the answer; opening
the image and detecting are the Detector's (puhui.tasks.detection), which owns the model's processing.
"""
from __future__ import annotations

import base64
import binascii
import time
from fastapi import APIRouter, Request, Security
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import PuhuiError
from .auth import bearer
from .errors import APIError, from_puhui
from .deps import ERRORS, served_models
from .schemas import Closed

ROUTE = "/v1/detections"
UPLOAD_ROUTES = (ROUTE,)
MAX_PIXELS = 40_000_000            # 40 megapixels: a 7,300 x 5,500 photograph; a bomb decodes to far more

router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=ERRORS, tags=["vision"])


class _Detection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="A detection model served here, e.g. detr-synthetic (see GET /v1/models).")
    threshold: float = Field(0.7, ge=0, le=1, description="Objects scoring above this are returned.")


class DetectionRequest(_Detection):
    image: str = Field(..., min_length=1, description="The image file's bytes (PNG, JPEG, WebP ...) as base64, or "
                                                      "a data: URL of them.")


class DetectionForm(_Detection):
    file: bytes = Field(..., description="The image file (PNG, JPEG, WebP ...).")


class DetectedObject(Closed):
    label: str
    score: float
    box: list[float] = Field(..., description="[x0, y0, x1, y1] in pixels of the image as sent.")


class DetectionResponse(Closed):
    object: str = "detection"
    model: str
    created: int
    width: int
    height: int
    threshold: float
    objects: list[DetectedObject] = Field(..., description="Best first.")


def _schema(model: type[BaseModel], binary: tuple[str, ...] = ()) -> dict:
    schema = model.model_json_schema()
    for name in binary:
        schema["properties"][name] = {"type": "string", "format": "binary",
                                      "description": schema["properties"][name].get("description", "")}
    return schema


_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _schema(DetectionRequest)},
    "multipart/form-data": {"schema": _schema(DetectionForm, ("file",))}}}}


@router.post("/detections", response_model=DetectionResponse, openapi_extra=_BODY,
             summary="Detect objects in an image: labels, scores and pixel boxes")
async def detections(request: Request):
    body, data, field = await _read(request)
    worker = served_models(request).worker(body.model, "detection", ROUTE)

    def detect(detector):
        try:
            image = detector.open_image(data, max_pixels=MAX_PIXELS, param=field)
        except PuhuiError as e:
            err = from_puhui(e, param=field)
            err.code = err.code or "invalid_image"
            raise err from None
        return image.size, detector.detect(image, body.threshold)

    (width, height), objects = await worker.run(detect)
    return {"object": "detection", "model": worker.name, "created": int(time.time()), "width": width,
            "height": height, "threshold": body.threshold, "objects": objects}


async def _read(request: Request) -> tuple[_Detection, bytes, str]:
    """(the parameters, the image bytes, the field they came in) of a multipart or JSON request."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form()
        fields: dict = {}
        for key, value in form.multi_items():
            if key == "file" and hasattr(value, "read"):
                value = await value.read()
            fields[key] = value if key not in fields else [*_list(fields[key]), value]
        if "file" in fields and not isinstance(fields["file"], bytes):
            raise APIError(400, "'file' must be an uploaded file (a multipart part with a filename)", param="file",
                           code="invalid_file")
        body = _validate(DetectionForm, fields)
        data, field = body.file, "file"
    elif ctype in ("application/json", ""):
        body = _validate(DetectionRequest, await request.body())
        data, field = _base64(body.image), "image"
    else:
        raise APIError(415, f"send the image as multipart/form-data (a 'file' part) or as JSON with base64 'image', "
                            f"not as {ctype}", code="unsupported_media_type")
    if not data:
        raise APIError(400, f"'{field}' is empty: no image", param=field, code="invalid_image")
    return body, data, field


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def _validate(model: type[BaseModel], fields: dict | bytes):
    """The request's parameters (a dict of form fields, or a JSON body); errors as FastAPI's own (a 400)."""
    try:
        return model.model_validate_json(fields) if isinstance(fields, bytes) else model.model_validate(fields)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


def _base64(text: str) -> bytes:
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise APIError(400, "'image' is a data: URL without ';base64,' data", param="image",
                           code="invalid_image")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "'image' is not valid base64", param="image", code="invalid_image") from None
