"""`create_app(settings, gateway=None)`: the FastAPI app; nothing happens at import time."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from router.control.store import open_control
from router.dataplane.gateway import Gateway
from router.dataplane.runtime import open_service
from router.edge import openapi
from router.edge.auth import KeyRing
from router.edge.fastpath import FastPath
from router.edge.lane import Lane
from router.edge.handlers import register_error_handlers
from router.edge.middleware import Edge, EdgeMiddleware
from router.edge.ratelimit import RateLimiter
from router.edge.routes import admin, jobs, operations, predictions, v2
from router.jobs.store import open_jobs
from router.logs import flush_logs
from router.metrics import Metrics
from router.settings import Settings

log = logging.getLogger(__name__)

@asynccontextmanager
async def lifespan(app: FastAPI):
    """Opens every client inside the running loop; closes them all on exit."""
    settings: Settings = app.state.settings
    app.state.keyring = KeyRing.from_settings(settings)
    if app.state.keyring.enabled:
        log.info("API keys: %d configured; anonymous scopes: %s", len(settings.api_keys),
                 ",".join(sorted(settings.anonymous())) or "none")
    else:
        log.warning("no API keys configured: the router is open (anonymous scopes: %s)",
                    ",".join(sorted(settings.anonymous())) or "none")
    app.state.limiter = RateLimiter(settings, app.state.metrics)
    try:
        async with open_service(settings, app.state.metrics, app.state.gateway) as service, \
                open_jobs(settings) as store, open_control(settings, service, controller=True) as control:
            app.state.service = service
            app.state.jobs = store
            app.state.control = control
            # Everything made at start-up is long-lived: keep it out of the collector's
            # full passes, which otherwise show up as tail-latency pauses under load.
            gc.collect()
            gc.freeze()
            # A request's garbage is freed by reference counting; a young pass every 700
            # allocations mostly walks the objects of the requests in flight (about a
            # tenth of a miss's CPU in-process), every 10,000 a fourteenth as often.
            if settings.gc_gen0_threshold:
                gc.set_threshold(settings.gc_gen0_threshold, *gc.get_threshold()[1:])
            yield
    finally:
        await app.state.limiter.close()
        flush_logs()


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
    openapi.install(app, settings)
    for surface in (predictions, jobs, operations, v2, admin):
        app.include_router(surface.router)
    app.state.route_methods = [(route.path_regex, route.methods) for surface in (predictions, jobs, operations, v2, admin)
                               for route in surface.router.routes]
    app.mount("/static", StaticFiles(directory=operations.STATIC), name="static")
    if settings.fast_path:  # inside the edge middleware: added first
        hot = {predictions.predict: "predict", predictions.predict_model: "predict", v2.infer: "predict"}
        app.add_middleware(FastPath, api=app, routes=[*predictions.router.routes, *v2.router.routes], endpoints=hot)
    app.state.edge = Edge(settings.max_body_bytes, app.state.metrics, settings.request_logging,
                          settings.max_in_flight)
    app.add_middleware(EdgeMiddleware, edge=app.state.edge)
    # serves the hot routes inside the HTTP protocol (router/edge/server.py): hits at once, misses in a task
    app.state.lane = Lane(app, app.state.edge) if settings.fast_path else None
    return app


def app_from_env() -> FastAPI:
    """The app factory uvicorn calls in each worker process (WORKERS > 1)."""
    from router.logs import startup_settings

    from router.edge import server

    settings = startup_settings()
    if settings is None:
        raise SystemExit(2)
    server.configure(settings)
    return create_app(settings)
