"""`create_app(settings)`: the FastAPI app; nothing happens at import time."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.api import STATIC, api
from router.api_jobs import jobs_api
from router.context import current_request_id
from router.errors import RouterError, error_body
from router.metrics import Metrics
from router.middleware import EdgeMiddleware
from router.jobs import open_jobs
from router.runtime import open_service
from router.settings import Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Opens every client inside the running loop; closes them all on exit."""
    settings: Settings = app.state.settings
    async with open_service(settings, app.state.metrics) as service, open_jobs(settings) as jobs:
        app.state.service = service
        app.state.jobs = jobs
        # Everything made at start-up is long-lived: keep it out of the collector's
        # full passes, which otherwise show up as tail-latency pauses under load.
        gc.collect()
        gc.freeze()
        yield


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(error_body(code, message, current_request_id()), status_code=status)


def register_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RouterError)
    async def router_error(request: Request, exc: RouterError):
        if exc.status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return _error(exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return _error(422, "invalid_input", f"{where}: {first['msg']}" if where else first["msg"])

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app = FastAPI(title="Triton router", version="0.1.0", lifespan=lifespan,
                  description="Version routing, canary splits and caching in front of Triton.")
    app.state.settings = settings
    app.state.metrics = Metrics(enabled=settings.metrics_enabled)
    register_error_handlers(app)
    app.include_router(api)
    app.include_router(jobs_api)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes, metrics=app.state.metrics,
                       request_logging=settings.request_logging)
    return app


def app_from_env() -> FastAPI:
    """The app factory uvicorn calls in each worker process (WORKERS > 1)."""
    from router.logs import startup_settings

    settings = startup_settings()
    if settings is None:
        raise SystemExit(2)
    return create_app(settings)
