"""/admin: the rollout control plane's API, for keys with the `admin` scope."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError

from router.control.state import Change, Rollout
from router.edge.deps import RecordDep, ServiceDep, require
from router.edge.schemas import ErrorResponse, parse
from router.edge.bodies import read_json_object
from router.errors import Conflict, InvalidInput, NotFound

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[require("admin")])
RESPONSES: dict = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 422, 429, 503)}


async def _state(request: Request, service, model: str) -> Rollout:
    snap = service.catalog.snapshot
    if not snap.knows(model):
        raise NotFound(f"unknown model {model[:100]!r}; available: {', '.join(sorted(snap.states)) or 'none'}")
    stored = await request.app.state.rollouts.get(model)
    return stored or Rollout.seed(model, service.settings.route_for(model))


@router.get("/rollouts", summary="Every model's rollout state", response_model=dict[str, Rollout], responses=RESPONSES)
async def rollouts(request: Request, service: ServiceDep):
    return {m: await _state(request, service, m) for m in sorted(service.catalog.snapshot.states)}


@router.get("/rollouts/{model}", summary="A model's rollout state", response_model=Rollout, responses=RESPONSES)
async def rollout(model: str, request: Request, service: ServiceDep):
    return await _state(request, service, model)


@router.put("/rollouts/{model}", summary="Set a model's split by hand; every replica applies it within a second",
            response_model=Rollout, responses=RESPONSES,
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": Change.model_json_schema()}}}})
async def change(model: str, request: Request, service: ServiceDep, record: RecordDep):
    body = parse(Change, await read_json_object(request, service.settings.max_json_depth))
    current = await _state(request, service, model)
    ready = service.catalog.snapshot.ready(model)
    for field in ("default_version", "canary_version", "shadow_version"):
        version = getattr(body, field)
        if field in body.model_fields_set and version is not None and version not in ready:
            raise Conflict(f"{field}: {model} v{version} is not READY in Triton (ready: "
                           f"{', '.join(f'v{v}' for v in sorted(ready)) or 'none'})")
    try:
        updated = await request.app.state.rollouts.change(model, current, body, record.key_name, body.reason)
    except (ValueError, ValidationError) as exc:
        raise InvalidInput(str(exc).splitlines()[0]) from None
    service.set_route(model, updated.route())  # this replica at once; the others on the announcement
    return updated
