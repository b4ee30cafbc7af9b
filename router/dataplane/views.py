"""The dataplane's views, each built in one place: a prediction's response
body (for the API and the worker alike), readiness, and the models view."""

from __future__ import annotations

from typing import Callable, Sequence

from router.dataplane.catalog import Snapshot
from router.dataplane.routing import default_version
from router.dataplane.types import Prediction
from router.settings import ModelRoute


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


def readiness(snap: Snapshot, route_of: RouteOf, required) -> dict:
    """Ready when Triton is and every required model's default version is."""
    models = {}
    for name in sorted(required):
        ready = snap.ready(name)
        default = default_version(route_of(name), ready)
        models[name] = {"default_version": default, "ready": default is not None and default in ready}
    ok = snap.triton_ready and bool(models) and all(m["ready"] for m in models.values())
    return {"ready": ok, "triton": snap.triton_ready, "models": models}


def models_view(snap: Snapshot, route_of: RouteOf, default_model: str) -> dict:
    """Every model Triton knows: versions and their states, routing, labels and input."""
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
        }
    return {"default_model": default_model, "triton": snap.triton_ready, "models": out}
