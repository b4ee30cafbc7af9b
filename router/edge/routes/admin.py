"""/admin: the rollout control plane's API, for keys with the `admin` scope."""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from typing import Callable

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError

from router.control.figures import live as figures_live
from router.control.state import Action, Change, Rollout, RolloutConflict, Start
from router.edge.bodies import read_json_object
from router.edge.deps import RecordDep, ServiceDep, require
from router.dataplane.routing import default_version
from router.edge.schemas import ErrorResponse, parse
from router.errors import Conflict, ControlUnavailable, InvalidInput, NotFound

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[require("admin")])
RESPONSES: dict = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 422, 429, 503)}


def _body(schema: type[BaseModel], required: bool = True) -> dict:
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": schema.model_json_schema()}}}}


@contextmanager
def _reachable():
    """A Redis that cannot be reached is a 503 with its own code, not a 500."""
    from redis.exceptions import RedisError

    try:
        yield
    except (RedisError, OSError, asyncio.TimeoutError) as exc:
        raise ControlUnavailable(f"the rollout states' Redis cannot be reached now ({type(exc).__name__}); "
                                 "read the state again before repeating a change") from None


async def _state(request: Request, service, model: str, live: bool = False) -> Rollout:
    with _reachable():
        return await _read_state(request, service, model, live)


async def _read_state(request: Request, service, model: str, live: bool) -> Rollout:
    snap = service.catalog.snapshot
    if not snap.knows(model):
        raise NotFound(f"unknown model {model[:100]!r}; available: {', '.join(sorted(snap.states)) or 'none'}")
    store = request.app.state.control.store
    state = await store.get(model) or Rollout.seed(model, service.settings.route_for(model))
    if live and state.status == "progressing":  # the controller's latest judgement of this step
        verdict = await store.verdict(model)
        if verdict is not None and verdict.get("step") == state.step:
            state.analysis = state.analysis.model_copy(update={"verdict": verdict})
    if live and state.live:
        default = default_version(state.route(), snap.ready(model))
        figures = await figures_live(request.app.state.control.figures, state, default)
        state.analysis = state.analysis.model_copy(update={"live": figures})
    return state


def _ready(service, model: str, field: str, version: int | None) -> None:
    ready = service.catalog.snapshot.ready(model)
    if version is not None and version not in ready:
        raise Conflict(f"{field}: {model} v{version} is not READY in Triton (ready: "
                       f"{', '.join(f'v{v}' for v in sorted(ready)) or 'none'})")


async def _transition(request: Request, service, model: str, make: Callable[[Rollout], Rollout]) -> Rollout:
    """Applies `make` to the stored state as the next revision; this replica
    applies it at once, the others on the announcement."""
    control = request.app.state.control
    current = await _state(request, service, model)
    try:
        with _reachable():
            updated = await control.store.update(model, current, make)
    except RolloutConflict as exc:
        raise Conflict(str(exc)) from None
    except (ValueError, ValidationError) as exc:
        raise InvalidInput(str(exc).splitlines()[0]) from None
    control.apply(model, updated)
    return updated


@router.get("/rollouts", summary="Every model's rollout state", response_model=dict[str, Rollout], responses=RESPONSES)
async def rollouts(request: Request, service: ServiceDep):
    return {m: await _state(request, service, m, live=True) for m in sorted(service.catalog.snapshot.states)}


@router.get("/rollouts/{model}", summary="A model's rollout state, with the live verdict of its step",
            response_model=Rollout, responses=RESPONSES)
async def rollout(model: str, request: Request, service: ServiceDep):
    return await _state(request, service, model, live=True)


@router.put("/rollouts/{model}", summary="Set a model's split by hand; every replica applies it within a second",
            response_model=Rollout, responses=RESPONSES, openapi_extra=_body(Change))
async def change(model: str, request: Request, service: ServiceDep, record: RecordDep):
    body = parse(Change, await read_json_object(request, service.settings.max_json_depth))
    for field in ("default_version", "canary_version", "shadow_version"):
        if field in body.model_fields_set:
            _ready(service, model, field, getattr(body, field))
    return await _transition(request, service, model, lambda s: s.apply(body, record.key_name, body.reason))


@router.post("/rollouts/{model}/start", summary="Start an analysed rollout of a canary version, step by step",
             response_model=Rollout, responses=RESPONSES, openapi_extra=_body(Start))
async def start(model: str, request: Request, service: ServiceDep, record: RecordDep):
    body = parse(Start, await read_json_object(request, service.settings.max_json_depth))
    current = await _state(request, service, model)  # 404 for an unknown model, before any 409
    _ready(service, model, "canary_version", body.canary_version)
    serving = default_version(current.route(), service.catalog.snapshot.ready(model) - {body.canary_version})
    return await _transition(request, service, model, lambda s: s.start(body, record.key_name, serving=serving))


async def _action(request: Request, service, model: str) -> Action:
    if not await request.body():
        return Action()
    return parse(Action, await read_json_object(request, service.settings.max_json_depth))


@router.post("/rollouts/{model}/promote", summary="Make the canary the default now, skipping the remaining steps",
             response_model=Rollout, responses=RESPONSES, openapi_extra=_body(Action, required=False))
async def promote(model: str, request: Request, service: ServiceDep, record: RecordDep):
    body = await _action(request, service, model)
    current = await _state(request, service, model)
    _ready(service, model, "canary_version", current.canary_version)
    return await _transition(request, service, model,
                             lambda s: s.promote(record.key_name, body.reason or "promoted by hand"))


@router.post("/rollouts/{model}/rollback", summary="Send the canary's share back to the default now",
             response_model=Rollout, responses=RESPONSES, openapi_extra=_body(Action, required=False))
async def rollback(model: str, request: Request, service: ServiceDep, record: RecordDep):
    body = await _action(request, service, model)
    return await _transition(request, service, model,
                             lambda s: s.rollback(record.key_name, body.reason or "rolled back by hand"))


@router.post("/rollouts/{model}/pause", summary="Hold a progressing rollout at its current step",
             response_model=Rollout, responses=RESPONSES, openapi_extra=_body(Action, required=False))
async def pause(model: str, request: Request, service: ServiceDep, record: RecordDep):
    body = await _action(request, service, model)
    return await _transition(request, service, model, lambda s: s.pause(record.key_name, body.reason))


@router.post("/rollouts/{model}/resume", summary="Carry on a paused rollout: its step is watched for a new interval",
             response_model=Rollout, responses=RESPONSES, openapi_extra=_body(Action, required=False))
async def resume(model: str, request: Request, service: ServiceDep, record: RecordDep):
    body = await _action(request, service, model)
    return await _transition(request, service, model, lambda s: s.resume(record.key_name, body.reason))
