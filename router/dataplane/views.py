"""The dataplane's views, each built in one place: a prediction's response
body (for the API and the worker alike), readiness, and the models view with
each model's rollout and its live figures."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, Mapping, Sequence

from router.control.figures import live
from router.control.state import Rollout
from router.dataplane.catalog import Snapshot
from router.dataplane.routing import default_version
from router.dataplane.types import Prediction
from router.settings import ModelRoute

log = logging.getLogger(__name__)


def prediction_body(pred: Prediction, request_id: str) -> dict:
    label, confidence = pred.scores[0]
    out = {
        "request_id": request_id, "model": pred.model, "model_version": pred.model_version,
        "prediction": label, "confidence": confidence, "scores": dict(pred.scores),
        "source": "cache" if pred.cached else "model", "cached": pred.cached, "routed_by": pred.routed_by,
    }
    if pred.input is not None:
        out["input"] = pred.input
    if pred.requested_version is not None:
        out["requested_version"] = pred.requested_version
    return out


def response_body(preds: Sequence[Prediction], request_id: str, batch: bool, latency_ms: float) -> dict:
    """The /predict body, or for a batch {request_id, results, latency_ms}
    with each item's id suffixed -0, -1, ..."""
    if batch:
        results = [prediction_body(p, f"{request_id}-{n}") for n, p in enumerate(preds)]
        return {"request_id": request_id, "results": results, "latency_ms": latency_ms}
    return {**prediction_body(preds[0], request_id), "latency_ms": latency_ms}


RouteOf = Callable[[str], ModelRoute]
RolloutOf = Callable[[str], Rollout]


def readiness(snap: Snapshot, route_of: RouteOf, required) -> dict:
    """Ready when Triton is and every required model's default version is."""
    models = {}
    for name in sorted(required):
        ready = snap.ready(name)
        default = default_version(route_of(name), ready)
        models[name] = {"default_version": default, "ready": default is not None and default in ready}
    ok = snap.triton_ready and bool(models) and all(m["ready"] for m in models.values())
    return {"ready": ok, "triton": snap.triton_ready, "models": models}


def models_view(snap: Snapshot, route_of: RouteOf, default_model: str, rollout_of: RolloutOf,
                figures: Mapping[str, dict | None]) -> dict:
    """Every model Triton knows: versions and their states, routing, labels,
    input, and its rollout with the live `figures` of the model (when read)."""
    out = {}
    for name in sorted(snap.states):
        route = route_of(name)
        info = snap.infos.get(name)
        out[name] = {
            "versions": {str(v): s for v, s in sorted(snap.states[name].items())},
            "default_version": default_version(route, snap.ready(name)),
            "canary_version": route.canary_version, "canary_percent": route.canary_percent,
            "labels": list(info.labels) if info else [], "input_kind": info.input_kind if info else None,
            "input_shape": list(info.dims) if info else None,
            "inputs": [t.view() for t in info.inputs] if info else [],
            "outputs": [t.view() for t in info.outputs] if info else [],
            "rollout": rollout_view(rollout_of(name), figures.get(name)),
        }
    return {"default_model": default_model, "triton": snap.triton_ready, "models": out}


def rollout_view(state: Rollout, figures: dict | None) -> dict:
    """A rollout as /models shows it: the split, the step (1-based), why it is
    paused or was rolled back, and the current window's figures (None when no
    canary or shadow is live, or they could not be read)."""
    return {"status": state.status, "revision": state.revision, "default_version": state.default_version,
            "canary_version": state.canary_version, "canary_percent": state.canary_percent,
            "step": None if state.step is None else state.step + 1, "steps": list(state.steps),
            "shadow_version": state.shadow_version, "shadow_percent": state.shadow_percent,
            "reason": state.reason, "figures": figures}


class LiveFigures:
    """The live figures of each model's rollout, read from the figures store
    (Redis, shared by the replicas) at most once per `ttl_s` per model however
    often they are asked for: concurrent callers share one read, and a read
    that fails or outlasts `timeout_s` gives None, kept as long as a good one."""

    def __init__(self, store, ttl_s: float = 1.0, timeout_s: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.clock = clock
        self._reads: dict[str, tuple[float, tuple, asyncio.Future]] = {}

    async def of(self, state: Rollout, default: int | None) -> dict | None:
        """The figures of `state`'s current window (`default`: the version the
        default share is served by); None when nothing is live."""
        if not state.live:
            return None
        what = (state.window, state.canary_version, state.shadow_version, default)
        now = self.clock()
        cached = self._reads.get(state.model)
        if cached is None or now >= cached[0] or cached[1] != what:  # stale, or another window or split
            cached = self._reads[state.model] = (now + self.ttl_s, what,
                                                 asyncio.ensure_future(self._read(state, default)))
        return await asyncio.shield(cached[2])  # a caller that goes away leaves the read to the others

    async def every(self, snap: Snapshot, rollout_of: RolloutOf) -> dict[str, dict | None]:
        """The figures of every model Triton knows, read at once: {model: figures}."""
        names = sorted(snap.states)
        states = [rollout_of(name) for name in names]
        results = await asyncio.gather(*(self.of(state, default_version(state.route(), snap.ready(name)))
                                         for name, state in zip(names, states)))
        return dict(zip(names, results))

    async def _read(self, state: Rollout, default: int | None) -> dict | None:
        try:
            return await asyncio.wait_for(live(self.store, state, default), self.timeout_s)
        except Exception as exc:  # TimeoutError included: the view is served without them
            log.warning("cannot read the live rollout figures of %s: %r", state.model, exc)
            return None
