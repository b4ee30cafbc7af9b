"""Predictions: /predict (JSON, multipart, query string), /models/{m}/predict
and /predict/batch. Thin: parse, hand the dataplane typed items, answer."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from router.context import RequestRecord
from router.dataplane.service import PredictionService
from router.dataplane.types import Item, Prediction
from router.dataplane.views import response_body
from router.edge import bodies
from router.edge.deps import RecordDep, ServiceDep, SettingsDep, require
from router.edge.schemas import (ERROR_RESPONSES, BatchBody, BatchResponse, PredictBody, PredictResponse,
                                 request_body)
from router.settings import Settings

router = APIRouter(tags=["predictions"], dependencies=[require("predict")])
PREDICT_DOC = dict(response_model=PredictResponse, responses=ERROR_RESPONSES,
                   openapi_extra=request_body(PredictBody))


class FastJSON(JSONResponse):
    """JSON by orjson (about ten times the standard library's speed on these bodies)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content)


def answer(record: RequestRecord, preds: list[Prediction], batch: bool = False) -> tuple[dict, dict[str, str]]:
    """The response body and headers, with the record filled for the edge's log line and metrics."""
    first = preds[0]
    record.served(first.model, first.model_version, first.routed_by, all(p.cached for p in preds))
    body = response_body(preds, record.request_id, batch, record.elapsed_ms())
    return body, {"X-Model-Version": str(first.model_version), "X-Cache": record.cache}


def respond(record: RequestRecord, preds: list[Prediction], batch: bool = False) -> JSONResponse:
    body, headers = answer(record, preds, batch)
    return FastJSON(body, headers=headers)


async def _predict_one(request: Request, service: PredictionService, settings: Settings, record: RequestRecord,
                       path_model: str | None = None) -> JSONResponse:
    fields, upload = await bodies.read_fields(request, settings.max_json_depth)
    items, opts = bodies.single(request.headers, settings, record.request_id, fields, upload, path_model)
    return respond(record, [await service.predict(items[0], opts, record.request_id)])


@router.post("/predict", summary="Predict with the default (or a chosen) model", **PREDICT_DOC)
async def predict(request: Request, service: ServiceDep, settings: SettingsDep, record: RecordDep):
    return await _predict_one(request, service, settings, record)


@router.get("/predict", summary="Predict from a query string", response_model=PredictResponse,
            responses=ERROR_RESPONSES)
async def predict_get(request: Request, service: ServiceDep, settings: SettingsDep, record: RecordDep,
                      text: Annotated[str, Query(description="Text to classify")],
                      model: str | None = None, model_version: str | None = None,
                      top_k: Annotated[int | None, Query(ge=1)] = None):
    opts = bodies.options(request.headers, settings, record.request_id, model, model_version, top_k)
    return respond(record, [await service.predict(Item(text=text), opts, record.request_id)])


@router.post("/models/{model}/predict", summary="Predict with one model", **PREDICT_DOC)
async def predict_model(model: str, request: Request, service: ServiceDep, settings: SettingsDep,
                        record: RecordDep):
    return await _predict_one(request, service, settings, record, path_model=model)


@router.post("/predict/batch", summary="Several inputs in one call", response_model=BatchResponse,
             responses=ERROR_RESPONSES, openapi_extra=request_body(BatchBody, multipart=False))
async def predict_batch(request: Request, service: ServiceDep, settings: SettingsDep, record: RecordDep):
    fields = await bodies.read_json_object(request, settings.max_json_depth)
    items, opts = bodies.batch(request.headers, settings, record.request_id, fields)
    return respond(record, await service.predict_many(items, opts, record.request_id), batch=True)
