"""Typed dependencies of the routes. They are `async def`: a plain `def`
would be run in a thread pool on every request. Tests may swap them with
`app.dependency_overrides`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from router import context
from router.context import RequestRecord
from router.dataplane.service import PredictionService
from router.errors import JobsUnavailable
from router.jobs.store import JobStore
from router.metrics import Metrics
from router.settings import Settings


async def get_service(request: Request) -> PredictionService:
    return request.app.state.service


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_record() -> RequestRecord:
    """The record the edge middleware made for this request."""
    record = context.current()
    assert record is not None, "EdgeMiddleware makes a record for every HTTP request"
    return record


async def get_jobs(request: Request) -> JobStore:
    store = request.app.state.jobs
    if store is None:
        raise JobsUnavailable("asynchronous jobs need Redis: set REDIS_URL (or JOBS_REDIS_URL)")
    return store


ServiceDep = Annotated[PredictionService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RecordDep = Annotated[RequestRecord, Depends(get_record)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
