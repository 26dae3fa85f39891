"""Every error the server answers, as OpenAI's body: {"error": {"message", "type", "param", "code"}}.

puhui's own errors (errors.py) are mapped here, once: their `http_status` and `kind` give the status and
type. FastAPI's validation errors (422) become 400s that name the parameter, a body that is not JSON a 400
saying why (empty, not UTF-8, nested too deeply, a syntax error) with code "invalid_json", unknown routes 404s,
and anything unexpected a 500 that says nothing of the internals (it is logged). A client's string quoted in a
message (a model name, an unknown field) is cut to NAME_LIMIT characters: an error never echoes a whole body.
"""
from __future__ import annotations

import json
import logging
import math
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ModelNotFound, PuhuiError

log = logging.getLogger("puhui.serve")

NAME_LIMIT = 100        # characters of a client's string quoted in an error message
MESSAGE_LIMIT = 2000    # characters of a library error's message (they may quote what they were given)


def quoted(text, limit: int = NAME_LIMIT) -> str:
    """repr(text), cut after `limit` characters with an ellipsis and the whole length: 'abc…' (900000 characters)."""
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def cut(text, limit: int = NAME_LIMIT) -> str:
    """`text` (a parameter's name, a path) as it is, or its first `limit` characters and an ellipsis."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


class APIError(Exception):
    """An error answered as it is: status, message, OpenAI type, the parameter at fault, a code."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_puhui(e: PuhuiError, param: str | None = None) -> APIError:
    """The one mapping of puhui's error hierarchy to HTTP: status and type from the error's class, the
    parameter at fault from `param` when the caller knows it, else the exception's own `e.param`, and its
    `code`; never read from the wording."""
    message = str(e) or type(e).__name__
    if len(message) > MESSAGE_LIMIT:
        message = f"{message[:MESSAGE_LIMIT]}… (cut: {len(message)} characters in all)"
    param = cut(param or e.param) if (param or e.param) else None
    code = e.code
    if isinstance(e, ModelNotFound):
        code = code or "model_not_found"
        param = param or "model"
    return APIError(e.http_status, message, e.kind, param, code)


def unsupported(param: str, why: str = "") -> APIError:
    """A parameter we know of but do not implement: refused, never ignored."""
    why = f": {why}" if why else ""
    return APIError(400, f"'{param}' is not supported by this server{why}", param=param, code="unsupported_parameter")


_TYPE_TAGS = re.compile(r"^(str|int|float|bool|list|dict|none|function-.*|.*\[.*\])$")


def _param_from_loc(loc) -> str | None:
    parts: list[str] = []
    for item in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif isinstance(item, str) and not _TYPE_TAGS.match(item):
            parts.append(("." if parts else "") + cut(item))
    return "".join(parts) or None


_EXPECTED = {"string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "a boolean",
             "list_type": "an array", "dict_type": "an object", "model_type": "an object",
             "model_attributes_type": "an object", "int_from_float": "an integer", "literal_error": None}


_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number")


def validation_error(errors: list[dict]) -> APIError:
    """FastAPI/pydantic's list of errors -> one 400 naming the first parameter at fault."""
    if not errors:
        return APIError(400, "invalid request")
    first = errors[0]
    kind = first.get("type", "")
    loc = tuple(first.get("loc", ()))
    param = _param_from_loc(loc)
    if kind == "json_invalid":
        where = f" (at character {loc[1]})" if len(loc) > 1 and isinstance(loc[1], int) else ""
        return APIError(400, "We could not parse the JSON body of your request: "
                             f"{first.get('ctx', {}).get('error', 'invalid JSON')}{where}. Send valid JSON with "
                             "Content-Type: application/json.", code="invalid_json")
    if kind == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param=param,
                        code="unknown_parameter")
    if kind == "missing" and param is None:      # no body at all (FastAPI reads an empty one as missing)
        return APIError(400, "The request body is empty: send the parameters as a JSON object, with "
                             "Content-Type: application/json.", code="invalid_json")
    if kind == "missing":
        return APIError(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")
    if kind in _BOUNDS and _non_finite(first.get("input")):   # NaN fails every comparison: say so, not a bound
        return APIError(400, f"Invalid value for '{param}': {_number_text(first.get('input'))} is not a finite "
                             f"number.", param=param, code="invalid_value")
    if param is None:
        return APIError(400, f"The request body must be a JSON object ({first.get('msg', 'invalid')}).",
                        code="invalid_request_body")
    same = [e for e in errors if _param_from_loc(tuple(e.get("loc", ()))) == param]
    if len(same) > 1 and all(e.get("type") in _EXPECTED for e in same):   # a union: every alternative failed
        got = type(first.get("input")).__name__
        return APIError(400, f"Invalid type for '{param}': got {_json_type(first.get('input'), got)}, "
                             f"which is none of the accepted types.", param=param, code="invalid_type")
    msg = first.get("msg", "invalid value")
    if kind in _EXPECTED and _EXPECTED[kind]:
        return APIError(400, f"Invalid type for '{param}': expected {_EXPECTED[kind]}, but got "
                             f"{_json_type(first.get('input'), 'a value')}.", param=param, code="invalid_type")
    return APIError(400, f"Invalid value for '{param}': {msg}.", param=param, code="invalid_value")


def _non_finite(value) -> bool:
    """NaN or an infinity: a float (Python's JSON parser reads NaN, Infinity), or a form field's text of one."""
    if isinstance(value, bool):
        return False
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def _number_text(value) -> str:
    """A non-finite number as JSON (and forms) spell it: NaN, Infinity, -Infinity."""
    x = float(value)
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def _unparsed_body(cause: BaseException | None) -> APIError | None:
    """The 400 for a body FastAPI could not read as JSON for another reason than a syntax error (it answers
    "There was an error parsing the body" and keeps the reason as the exception's cause)."""
    if isinstance(cause, UnicodeDecodeError):
        bad = cause.object[cause.start:cause.start + 1]
        byte = f"byte 0x{bad[0]:02x} at offset {cause.start}" if bad else f"offset {cause.start}"
        return APIError(400, f"The request body is not valid {cause.encoding.upper()} ({byte}: {cause.reason}). "
                             "Send JSON as UTF-8 text.", code="invalid_json")
    if isinstance(cause, RecursionError):
        return APIError(400, "The JSON body is nested too deeply to parse (arrays or objects inside one another, "
                             "hundreds of levels deep). Send the parameters as a flat JSON object.",
                        code="invalid_json")
    return None


def _json_type(value, default: str) -> str:
    if value is None:
        return "null"
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                    (list, "an array"), (dict, "an object")):
        if isinstance(value, t):
            return name
    return default


_STATUS_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                 405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error",
                 503: "service_unavailable", 504: "timeout_error"}


def install(app: FastAPI) -> None:
    """Answer every error of the app in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return e.response()

    @app.exception_handler(PuhuiError)
    async def _puhui_error(request: Request, e: PuhuiError):
        return from_puhui(e).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        err = validation_error(list(e.errors()))
        ctype = request.headers.get("content-type", "")
        if err.param is None and request.method == "POST" and "json" not in ctype:
            err.message = (f"The body must be JSON, sent with Content-Type: application/json "
                           f"(this request's Content-Type: {cut(ctype) or 'none'}).")
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        unparsed = _unparsed_body(e.__cause__) if e.status_code == 400 else None
        if unparsed is not None:
            return unparsed.response()
        if e.status_code == 404:
            message = f"Unknown request URL: {cut(request.method, 20)} {cut(request.url.path)}."
            code = "unknown_url"
        elif e.status_code == 405:
            message = f"Method {cut(request.method, 20)} is not allowed for {cut(request.url.path)}."
            code = "method_not_allowed"
        else:
            message = e.detail if isinstance(e.detail, str) else json.dumps(e.detail)
            code = {413: "request_too_large"}.get(e.status_code)
        err = APIError(e.status_code, message, _STATUS_TYPES.get(e.status_code, "invalid_request_error"),
                       code=code, headers=getattr(e, "headers", None))
        return err.response()

    app.add_middleware(CatchAllMiddleware)


class CatchAllMiddleware:
    """The innermost middleware: an unexpected exception is logged and answered with a 500 in OpenAI's shape,
    and not raised further (Starlette's own handler would re-raise it, and the server then drop the
    connection)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # noqa: BLE001 - this is the place for it
            log.exception("unexpected error answering %s %s", scope.get("method"), scope.get("path"))
            if not started:
                err = APIError(500, "The server had an error while processing your request (it is logged).",
                               "server_error")
                await err.response()(scope, receive, send)
