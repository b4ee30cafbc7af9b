"""Every exception handler, registered in one place; one error body everywhere."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.context import current_request_id
from router.edge.schemas import validation_message
from router.errors import RouterError, error_body, is_protocol_path, protocol_error

log = logging.getLogger(__name__)
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None,
           path: str = "") -> JSONResponse:
    if is_protocol_path(path):  # the Open Inference Protocol's shape; what Triton rejects is a 400
        return JSONResponse(protocol_error(message), status_code=400 if status == 422 else status, headers=headers)
    return JSONResponse(error_body(code, message, current_request_id()), status_code=status, headers=headers)


def error_response(exc: RouterError, path: str) -> JSONResponse:
    """A domain error's response on `path` (the request id from the current record)."""
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc.message)
    return _error(exc.status, exc.code, exc.message, exc.headers, path)


async def router_error(request: Request, exc: RouterError) -> JSONResponse:
    return error_response(exc, request.url.path)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(422, "invalid_input", validation_message(exc.errors()), path=request.url.path)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method of every route on this path, not only the first route's
        path = request.url.path
        methods = {m for regex, route_methods in request.app.state.route_methods if regex.match(path)
                   for m in route_methods}
        headers["Allow"] = ", ".join(sorted(methods))
    return _error(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail), headers,
                  request.url.path)


def register_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RouterError, router_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
