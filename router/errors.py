"""Domain errors carry their status; one body shape everywhere:
`{"error": {"code", "message", "request_id"}}`."""

from __future__ import annotations


class RouterError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RouterError):
    status, code = 400, "bad_request"


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


def error_body(code: str, message: str, request_id: str | None) -> dict:
    return {"error": {"code": code, "message": message, "request_id": request_id}}
