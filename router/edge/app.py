"""`create_app(settings, gateway=None)`: the FastAPI app; nothing happens at import time."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from router.dataplane.gateway import Gateway
from router.dataplane.runtime import open_service
from router.edge.handlers import register_error_handlers
from router.edge.middleware import EdgeMiddleware
from router.edge.routes import jobs, operations, predictions
from router.jobs.store import open_jobs
from router.metrics import Metrics
from router.settings import Settings


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Opens every client inside the running loop; closes them all on exit."""
    settings: Settings = app.state.settings
    async with open_service(settings, app.state.metrics, app.state.gateway) as service, \
            open_jobs(settings) as store:
        app.state.service = service
        app.state.jobs = store
        # Everything made at start-up is long-lived: keep it out of the collector's
        # full passes, which otherwise show up as tail-latency pauses under load.
        gc.collect()
        gc.freeze()
        yield


def create_app(settings: Settings | None = None, gateway: Gateway | None = None) -> FastAPI:
    """The router app. `gateway` replaces the Triton gateway made from
    settings (tests hand it a small fake); the caller then owns it."""
    settings = settings or Settings()
    app = FastAPI(title="Triton router", version="0.1.0", lifespan=lifespan,
                  description="Version routing, canary splits and caching in front of Triton.")
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.metrics = Metrics(enabled=settings.metrics_enabled)
    register_error_handlers(app)
    for surface in (predictions, jobs, operations):
        app.include_router(surface.router)
    app.mount("/static", StaticFiles(directory=operations.STATIC), name="static")
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
