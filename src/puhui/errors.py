"""The one small error hierarchy. cli.py maps it to exit codes, serve/ to HTTP statuses."""


class PuhuiError(Exception):
    """Base of every error puhui raises on purpose."""

    exit_code = 1
    http_status = 500
    kind = "server_error"


class BadInput(PuhuiError):
    """The caller gave something we cannot use (a missing file, a bad column, a bad name)."""

    exit_code = 2
    http_status = 400
    kind = "invalid_request_error"


class ModelNotFound(PuhuiError):
    exit_code = 2
    http_status = 404
    kind = "not_found_error"


class BadCheckpoint(BadInput):
    """A file that is not what it claims to be (truncated GGUF, bad safetensors header ...)."""


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
