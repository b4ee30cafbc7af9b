"""Typed dependencies of the routes. They are `async def`: a plain `def`
would be run in a thread pool on every request. Tests may swap them with
`app.dependency_overrides`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from router import context
from router.context import RequestRecord
from router.dataplane.service import PredictionService
from router.edge.auth import Principal, presented_key
from router.errors import JobsUnavailable

COUNTED = "router.rate_counted"  # set on the scope by the lane (router/edge/lane.py)
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


# Declared for the OpenAPI document (and its clients); the key itself is read by `presented_key`.
BearerDoc = Annotated[HTTPAuthorizationCredentials | None,
                      Security(HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>"))]
ApiKeyDoc = Annotated[str | None, Security(APIKeyHeader(name="X-API-Key", auto_error=False))]


async def authorize(request: Request, scope: str) -> Principal:
    """Authenticates the request, checks `scope`, puts the key's name on the
    record and counts the request against its rate limit."""
    record = await get_record()
    keyring = request.app.state.keyring
    principal = keyring.authenticate(presented_key(request.headers))
    record.key_name = principal.name
    keyring.authorize(principal, scope)
    if not request.scope.get(COUNTED):  # the lane may have counted it already
        client = request.client.host if request.client else "unknown"
        await request.app.state.limiter.hit(principal, client)
    return principal


def require(scope: str):
    """`authorize` for `scope`, as a dependency (documented in OpenAPI)."""

    async def authorized(request: Request, _bearer: BearerDoc = None, _key: ApiKeyDoc = None) -> Principal:
        return await authorize(request, scope)

    authorized.__name__ = f"require_{scope}"
    return Depends(authorized)


ServiceDep = Annotated[PredictionService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RecordDep = Annotated[RequestRecord, Depends(get_record)]
JobsDep = Annotated[JobStore, Depends(get_jobs)]
