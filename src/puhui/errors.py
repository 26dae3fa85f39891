"""The one small error hierarchy. cli.py maps it to exit codes, serve/ to HTTP statuses."""


class PuhuiError(Exception):
    """Base of every error puhui raises on purpose. `param` names the parameter at fault (an option, a request
    field such as "max_tokens" or "messages[2].content"), so that doors map it without reading the wording."""

    exit_code = 1
    http_status = 500
    kind = "server_error"
    code: str | None = None    # a machine-readable reason, where one is known (OpenAI's error codes)

    def __init__(self, message: str = "", *, param: str | None = None):
        super().__init__(message)
        self.param = param


class BadInput(PuhuiError):
    """The caller gave something we cannot use (a missing file, a bad column, a bad name)."""

    exit_code = 2
    http_status = 400
    kind = "invalid_request_error"


class ModelNotFound(PuhuiError):
    exit_code = 2
    http_status = 404
    kind = "not_found_error"


class TooLong(BadInput):
    """An input beyond a model's limit (its context window, its maximum input length); never cut silently."""

    code = "context_length_exceeded"


class BadCheckpoint(BadInput):
    """A file that is not what it claims to be (truncated GGUF, bad safetensors header ...)."""


class ModelCorrupt(BadCheckpoint):
    """A store model's file that is no longer the file its manifest records (its sha256 or size differ): damaged
    on disk after import. Exit code 2; for the server a fault of its own (500), not of the request."""

    http_status = 500
    kind = "server_error"
    code = "model_corrupt"


class Unsupported(PuhuiError):
    exit_code = 2
    http_status = 400
    kind = "invalid_request_error"


class DoesNotFit(PuhuiError):
    exit_code = 3
    http_status = 507
    kind = "insufficient_storage"


class Offline(PuhuiError):
    exit_code = 4
    http_status = 503
    kind = "service_unavailable"
