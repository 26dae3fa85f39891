"""What every request passes before a route: the drain (DrainMiddleware: a 503 once the server is shutting
down), API keys (AuthMiddleware) and the body limit (BodyLimitMiddleware).

API keys: `Authorization: Bearer KEY` on /v1/* and /metrics when the server has keys (/health and the API
document stay open; /health names the models only to a valid key). Checked before the body is read, so a
stranger learns nothing from 400s. Keys are compared in constant time (their sha256 digests, every key each
time) and never logged nor echoed."""
from __future__ import annotations

import hashlib
import hmac

from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import APIError
from .worker import shutting_down

# documents the scheme in /openapi.json; AuthMiddleware does the checking
bearer = HTTPBearer(auto_error=False, description="An API key of the server (`puhui serve --api-key`).")

PROTECTED = ("/v1/", "/metrics")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    def __init__(self, keys):
        keys = [k for k in (keys or ()) if k]
        self._digests = [_digest(k) for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def __repr__(self) -> str:  # never the keys
        return f"KeyRing({len(self)} keys)"

    def valid(self, key: str) -> bool:
        given = _digest(key)
        ok = False
        for d in self._digests:            # no early exit: the time does not tell which key matched
            ok |= hmac.compare_digest(given, d)
        return ok


def bearer_key(headers) -> str | None:
    """The key of an `Authorization: Bearer KEY` header (raw ASGI headers), or None."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and key.strip():
                return key.strip()
            return None
    return None


class AuthMiddleware:
    def __init__(self, app, keys: KeyRing):
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send):
        if (scope["type"] == "http" and self.keys and scope.get("method") != "OPTIONS"
                and scope["path"].startswith(PROTECTED)):
            key = bearer_key(scope.get("headers", ()))
            if key is None:
                err = APIError(401, "You didn't provide an API key. Send it in the Authorization header as "
                                    "'Bearer YOUR_KEY'.", "authentication_error", code="missing_api_key",
                               headers={"WWW-Authenticate": "Bearer"})
                return await err.response()(scope, receive, send)
            if not self.keys.valid(key):
                err = APIError(401, "Incorrect API key provided.", "authentication_error", code="invalid_api_key",
                               headers={"WWW-Authenticate": "Bearer"})
                return await err.response()(scope, receive, send)
        return await self.app(scope, receive, send)


class DrainMiddleware:
    """Counts the HTTP requests in progress for the Drain (worker.py); once it is draining, a new request is a 503
    `shutting_down` with Retry-After and `Connection: close`, and responses that start then close their connection
    too. /health still answers (its own 503, "shutting_down")."""

    def __init__(self, app, drain):
        self.app = app
        self.drain = drain

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        drain = self.drain
        if drain.draining and scope.get("path") != "/health":
            retry = drain.retry_after()
            err = shutting_down(f"the server is shutting down and takes no new requests; retry after {retry} s "
                                f"(a restarted server, or another one)", retry_after=retry)
            err.headers["Connection"] = "close"
            return await err.response()(scope, receive, send)

        async def closing_send(message):
            if message["type"] == "http.response.start" and drain.draining:
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        drain.active += 1
        try:
            await self.app(scope, receive, closing_send)
        finally:
            drain.active -= 1


class BodyLimitMiddleware:
    """413 for a body over `limit` bytes: at once by its Content-Length, or when a chunked one passes it.
    route_limits: other limits for some paths (file uploads), {path: bytes}."""

    def __init__(self, app, limit: int, route_limits: dict[str, int] | None = None):
        self.app = app
        self.limit = limit
        self.route_limits = dict(route_limits or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.route_limits.get(scope.get("path", ""), self.limit)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    return await _too_large(None, limit)(scope, receive, send)
                if size > limit:
                    return await _too_large(size, limit)(scope, receive, send)
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(seen, limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(seen, limit)(scope, receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """Raised from receive(): FastAPI lets an HTTPException through its body parsing to the handlers."""

    def __init__(self, size: int, limit: int):
        super().__init__(413, _message(size, limit))


def _message(size, limit) -> str:
    what = f"{size} bytes" if size is not None else "a body of unknown size"
    return f"The request body is too large: {what}, more than the server's limit of {limit} bytes."


def _too_large(size, limit):
    return APIError(413, _message(size, limit), code="request_too_large").response()
