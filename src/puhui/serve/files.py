"""OpenAI's Files API, for fine-tuning data: POST /v1/files (multipart: file, purpose), GET /v1/files,
GET /v1/files/{id}, GET /v1/files/{id}/content, DELETE /v1/files/{id}. Kept by store/files.py (atomic writes,
fine-tune files checked line by line as they arrive); uploads up to create_app's max_file_body."""
from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from ..errors import PuhuiError
from ..store import files
from .auth import bearer
from .deps import ERRORS
from .errors import APIError, from_puhui

router = APIRouter(prefix="/v1", dependencies=[Security(bearer)], responses=ERRORS, tags=["files"])
UPLOAD_ROUTES = ("/v1/files",)
_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "purpose"],
    "properties": {"file": {"type": "string", "format": "binary"},
                   "purpose": {"type": "string", "enum": list(files.PURPOSES)}}}}}}}


@router.post("/files", openapi_extra=_FORM, summary="Upload a file (fine-tune: JSON Lines, checked line by line)")
async def create_file(request: Request):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise APIError(415, "upload the file as multipart/form-data (parts 'file' and 'purpose')",
                       code="unsupported_media_type")
    form = await request.form()
    unknown = sorted(set(form) - {"file", "purpose"})
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: {unknown[0][:80]}", param=unknown[0][:80],
                       code="unknown_parameter")
    upload, purpose = form.get("file"), form.get("purpose")
    if upload is None or not hasattr(upload, "read"):
        raise APIError(400, "'file' must be an uploaded file (a multipart part with a filename)", param="file",
                       code="missing_required_parameter" if upload is None else "invalid_file")
    if not isinstance(purpose, str):
        raise APIError(400, "'purpose' is required", param="purpose", code="missing_required_parameter")
    data = await upload.read()
    try:
        obj = await run_in_threadpool(files.save, data, upload.filename or "upload", purpose)
    except PuhuiError as e:
        raise from_puhui(e) from None
    return vars(obj)


@router.get("/files", summary="The uploaded files, newest first")
async def list_files(purpose: Optional[str] = None):
    return {"object": "list", "data": [vars(f) for f in files.list_files(purpose)], "has_more": False}


@router.get("/files/{file_id}", summary="One uploaded file's object")
async def retrieve_file(file_id: str):
    return vars(_get(file_id))


@router.get("/files/{file_id}/content", summary="An uploaded file's bytes",
            responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}}})
async def file_content(file_id: str):
    obj = _get(file_id)
    return FileResponse(files.content_path(obj.id), media_type="application/octet-stream", filename=obj.filename)


@router.delete("/files/{file_id}", summary="Delete an uploaded file")
async def delete_file(file_id: str):
    try:
        files.delete(file_id)
    except PuhuiError as e:
        raise from_puhui(e, param="file_id") from None
    return {"id": file_id, "object": "file", "deleted": True}


def _get(file_id: str):
    try:
        return files.get(file_id)
    except PuhuiError as e:
        raise _not_found(e) from None


def _not_found(e: PuhuiError) -> APIError:
    err = from_puhui(e, param="file_id")
    err.code = "file_not_found" if err.status == 404 else err.code
    return err
