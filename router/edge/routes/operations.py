"""Operations: liveness, readiness, the models view, metrics, stats and the page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from router.dataplane.views import LiveFigures
from router.edge.deps import MetricsDep, ServiceDep, require
from router.edge.schemas import ErrorResponse, HealthView, ReadyView

router = APIRouter(tags=["operations"])
STATIC = Path(__file__).resolve().parent.parent / "static"


@router.get("/health", summary="Liveness, with what the router can see", response_model=HealthView)
async def health(service: ServiceDep, request: Request):
    return {**await service.health(), "auth": "on" if request.app.state.keyring.enabled else "off"}


@router.get("/ping", summary="Does nothing: a liveness probe that touches no dependency")
async def ping():
    return {"status": "ok"}


AUTH_RESPONSES: dict = {code: {"model": ErrorResponse} for code in (401, 403, 429)}


@router.get("/ready", summary="503 unless Triton and every default version are ready", response_model=ReadyView,
            responses={503: {"model": ReadyView, "description": "Triton, or a default version, is not ready"}})
async def ready(service: ServiceDep):
    view = service.readiness()
    return JSONResponse(view, status_code=200 if view["ready"] else 503)


async def get_live_figures(request: Request) -> LiveFigures:
    """This process's cache of the rollouts' live figures, made on first use
    over the figures store of the app's control plane."""
    state = request.app.state
    live = getattr(state, "live_figures", None)
    if live is None or live.store is not state.control.figures:
        live = state.live_figures = LiveFigures(state.control.figures)
    return live


LiveFiguresDep = Annotated[LiveFigures, Depends(get_live_figures)]


@router.get("/models", summary="Models, versions, their routing and live rollout")
async def models(service: ServiceDep, live: LiveFiguresDep):
    return service.models_view(await live.every(service.catalog.snapshot, service.versions.rollout))


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, dependencies=[require("metrics")],
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **AUTH_RESPONSES})
async def metrics(metrics: MetricsDep):
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/stats", summary="Request totals, cache hit rate and latency, as JSON",
            dependencies=[require("metrics")], responses=AUTH_RESPONSES)
async def stats(metrics: MetricsDep):
    return metrics.stats()


@router.get("/", include_in_schema=False)
async def index():
    return FileResponse(STATIC / "index.html")
