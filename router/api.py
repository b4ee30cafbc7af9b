"""The HTTP routes: thin, typed, and all answers in one shape."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from router import requests as parse
from router.errors import InvalidInput
from router.routing import default_version
from router.schemas import BatchBody, BatchResponse, ErrorResponse, PredictBody, PredictResponse
from router.service import Item, PredictionService
from router.settings import Settings

api = APIRouter()
STATIC = Path(__file__).resolve().parent / "static"
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503, 504)}


# Dependencies are `async def`: a plain `def` would be run in a thread pool on every request.
async def get_service(request: Request) -> PredictionService:
    return request.app.state.service


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


ServiceDep = Annotated[PredictionService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def _respond(request: Request, body: dict, preds) -> JSONResponse:
    state = request.state
    latency = round((time.perf_counter() - state.started) * 1000, 3)
    body["latency_ms"] = latency
    first = preds[0]
    state.model, state.model_version, state.routed_by = first.model, first.model_version, first.routed_by
    state.cache = "HIT" if all(p.cached for p in preds) else "MISS"
    headers = {"X-Model-Version": str(first.model_version), "X-Cache": state.cache}
    return JSONResponse(body, headers=headers)


async def _predict_one(request: Request, service: PredictionService, settings: Settings,
                       path_model: str | None = None) -> JSONResponse:
    fields, upload = await parse.read_fields(request)
    items, opts = parse.single(request, settings, fields, upload, path_model)
    pred = await service.predict(items[0], opts, request.state.request_id)
    return _respond(request, {"request_id": request.state.request_id, **pred.body()}, [pred])


PREDICT_DOC = dict(
    response_model=PredictResponse, responses=ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictBody.model_json_schema()},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}, "text": {"type": "string"},
            "model": {"type": "string"}, "model_version": {"type": "string"}, "top_k": {"type": "integer"}}}},
    }}},
)


@api.post("/predict", summary="Predict with the default (or a chosen) model", **PREDICT_DOC)
async def predict(request: Request, service: ServiceDep, settings: SettingsDep):
    return await _predict_one(request, service, settings)


@api.get("/predict", summary="Predict from a query string", response_model=PredictResponse, responses=ERRORS)
async def predict_get(request: Request, service: ServiceDep, settings: SettingsDep,
                      text: Annotated[str, Query(description="Text to classify")],
                      model: str | None = None, model_version: str | None = None,
                      top_k: Annotated[int | None, Query(ge=1)] = None):
    opts = parse.options(request, settings, model, model_version, top_k)
    pred = await service.predict(Item(text=text), opts, request.state.request_id)
    return _respond(request, {"request_id": request.state.request_id, **pred.body()}, [pred])


@api.post("/models/{model}/predict", summary="Predict with one model", **PREDICT_DOC)
async def predict_model(model: str, request: Request, service: ServiceDep, settings: SettingsDep):
    return await _predict_one(request, service, settings, path_model=model)


@api.post("/predict/batch", summary="Several inputs in one call", response_model=BatchResponse,
          responses=ERRORS, openapi_extra={"requestBody": {"required": True, "content": {
              "application/json": {"schema": BatchBody.model_json_schema()}}}})
async def predict_batch(request: Request, service: ServiceDep, settings: SettingsDep):
    fields = await parse.read_json(request)
    if not isinstance(fields, dict):
        raise InvalidInput("the JSON body must be an object")
    items, opts = parse.batch(request, settings, fields)
    preds = await service.predict_many(items, opts, request.state.request_id)
    rid = request.state.request_id
    results = [{"request_id": f"{rid}-{n}", **p.body()} for n, p in enumerate(preds)]
    return _respond(request, {"request_id": rid, "results": results}, preds)


@api.get("/health", summary="Liveness, with what the router can see")
async def health(service: ServiceDep, settings: SettingsDep):
    snap = service.catalog.snapshot
    redis = "disabled" if service.cache.backend == "memory" else ("ok" if await service.cache.healthy() else "down")
    return {"status": "ok", "model_loaded": bool(snap.ready(settings.default_model)),
            "triton": "ready" if snap.triton_ready else "unreachable", "redis": redis}


@api.get("/ping", summary="Does nothing: a liveness probe that touches no dependency")
async def ping():
    return {"status": "ok"}


@api.get("/ready", summary="503 unless Triton and every default version are ready")
async def ready(service: ServiceDep, settings: SettingsDep):
    snap = service.catalog.snapshot
    models = {}
    for name in sorted(set(snap.states) | {settings.default_model} | set(settings.model_routes)):
        default = default_version(settings.route_for(name), snap.ready(name))
        models[name] = {"default_version": default, "ready": default is not None and default in snap.ready(name)}
    ok = snap.triton_ready and bool(models) and all(m["ready"] for m in models.values())
    return JSONResponse({"ready": ok, "triton": snap.triton_ready, "models": models}, status_code=200 if ok else 503)


@api.get("/models", summary="Models, versions and their routing")
async def models(service: ServiceDep, settings: SettingsDep):
    snap = service.catalog.snapshot
    out = {}
    for name in sorted(snap.states):
        route = settings.route_for(name)
        info = snap.infos.get(name)
        out[name] = {
            "versions": {str(v): s for v, s in sorted(snap.states[name].items())},
            "default_version": default_version(route, snap.ready(name)),
            "canary_version": route.canary_version, "canary_percent": route.canary_percent,
            "labels": list(info.labels) if info else [], "input_kind": info.input_kind if info else None,
            "input_shape": list(info.dims) if info else None,
        }
    return {"default_model": settings.default_model, "triton": snap.triton_ready, "models": out}


@api.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request):
    return Response(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@api.get("/stats", summary="Request totals, cache hit rate and latency, as JSON")
async def stats(request: Request):
    return request.app.state.metrics.stats()


@api.get("/", include_in_schema=False)
async def index():
    return FileResponse(STATIC / "index.html")
