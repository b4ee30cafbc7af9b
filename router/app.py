"""`create_app(settings)`: the FastAPI app; nothing happens at import time."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.api import api
from router.cache import LRUCache, RedisCache
from router.catalog import Catalog
from router.context import current_request_id
from router.errors import RouterError, error_body
from router.metrics import Metrics
from router.middleware import EdgeMiddleware
from router.service import PredictionService
from router.settings import Settings
from router.triton import TritonGateway

log = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Opens every client inside the running loop; closes them all on exit."""
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    gateway = TritonGateway(settings.triton_protocol, settings.triton_url, settings.triton_timeout_s)
    if settings.redis_url:
        cache = RedisCache(settings.redis_url, settings.redis_timeout_s, settings.redis_backoff_max_s,
                           on_error=lambda op: metrics.redis_errors.labels(op).inc())
    else:
        cache = LRUCache(settings.cache_lru_size)

    def on_refresh(snapshot):
        for model in snapshot.states:
            metrics.loaded_versions.labels(model).set(len(snapshot.ready(model)))

    catalog = Catalog(gateway, settings.triton_refresh_s, settings.load_all_models, on_refresh)
    try:
        await catalog.start()
        app.state.service = PredictionService(settings, gateway, catalog, cache, metrics)
        log.info("router ready: triton=%s (%s), cache=%s", settings.triton_url, settings.triton_protocol,
                 cache.backend)
        yield
    finally:
        await catalog.stop()
        await cache.close()
        await gateway.close()


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
    app.state.metrics = Metrics()
    register_error_handlers(app)
    app.include_router(api)
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes, metrics=app.state.metrics,
                       request_logging=settings.request_logging)
    return app
