"""Domain errors carry their status; one body shape everywhere:
`{"error": {"code", "message", "request_id"}}`."""

from __future__ import annotations


class RouterError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(RouterError):
    status, code = 400, "bad_request"


class Unauthorized(RouterError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"WWW-Authenticate": 'Bearer realm="router"'})


class Forbidden(RouterError):
    status, code = 403, "forbidden"


class RateLimited(RouterError):
    status, code = 429, "rate_limited"


class Conflict(RouterError):
    status, code = 409, "conflict"


class Overloaded(RouterError):
    status, code = 503, "overloaded"


class InvalidInput(RouterError):
    status, code = 422, "invalid_input"


class NotFound(RouterError):
    status, code = 404, "not_found"


class PayloadTooLarge(RouterError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(RouterError):
    status, code = 415, "unsupported_media_type"


class ModelUnavailable(RouterError):
    """No version of the model can serve right now."""

    status, code = 503, "model_unavailable"


class TritonUnavailable(RouterError):
    status, code = 503, "triton_unavailable"


class TritonTimeout(RouterError):
    status, code = 504, "triton_timeout"


class VersionUnavailable(RouterError):
    """Triton says this version is not loaded or not ready: the caller may
    fall back to another version."""

    status, code = 503, "version_unavailable"


class TritonFailed(RouterError):
    """Triton answered with an error that is neither the input's fault nor
    a missing version."""

    status, code = 502, "triton_error"


class JobsUnavailable(RouterError):
    status, code = 503, "jobs_unavailable"


class ControlUnavailable(RouterError):
    """The rollout states' Redis cannot be read or written now."""

    status, code = 503, "control_unavailable"


def error_body(code: str, message: str, request_id: str | None) -> dict:
    return {"error": {"code": code, "message": message, "request_id": request_id}}


def is_protocol_path(path: str) -> bool:
    """The Open Inference Protocol's routes, whose errors take its own shape."""
    return path == "/v2" or path.startswith("/v2/")


def protocol_error(message: str) -> dict:
    """The Open Inference Protocol's error body (Triton's, which tritonclient reads)."""
    return {"error": message}


class JobsOutcomeUnknown(RouterError):
    """The submit may have reached the job queue, which did not answer: the
    job may exist. A retry with the same Idempotency-Key finds it."""

    status, code = 503, "jobs_outcome_unknown"


class JobsBusy(RouterError):
    """The job queue holds JOBS_MAX_QUEUED jobs; nothing was queued."""

    status, code = 503, "jobs_busy"


class IdempotencyKeyReused(RouterError):
    """An Idempotency-Key sent again with a different request body."""

    status, code = 422, "idempotency_key_reused"
