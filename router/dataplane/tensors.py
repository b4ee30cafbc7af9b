"""Raw-tensor inference (the Open Inference Protocol's routes) over the same
routing, fallback, cache, single-flight and metrics as predictions: a
request names a model and, optionally, a version; without one it is routed
like /predict (default, sticky canary, fallback), with one it is pinned and
Triton's own answer stands."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from router.dataplane.batching import TritonBatches
from router.dataplane.cache import jittered_ttl
from router.dataplane.catalog import ModelInfo, TensorSpec
from router.dataplane.protocol import InferRequest
from router.dataplane.tensor_cache import complete, pack, tensor_cache_key, unpack
from router.dataplane.service import PredictionService
from router.dataplane.shadow import compare_tensors
from router.dataplane.types import Options
from router.errors import BadRequest, NotFound, RouterError, VersionUnavailable


@dataclass(frozen=True)
class Served:
    version: int
    routed_by: str  # pinned | default | canary | fallback
    outputs: dict[str, np.ndarray]
    cached: bool
    requested_version: int | None = None


def parse_path_version(version: str | None) -> int | None:
    if version is None:
        return None
    if not (version.isascii() and version.isdigit() and len(version) <= 18) or int(version) < 1:
        raise BadRequest(f"model version must be a positive integer, got {version!r}")
    return int(version)


def _check_shape(spec: TensorSpec, shape: tuple[int, ...], max_batch: int) -> bool:
    dims = spec.dims
    if max_batch > 0:
        if not shape or shape[0] < 1 or shape[0] > max_batch:
            return False
        shape = shape[1:]
    return len(shape) == len(dims) and all(d == -1 or d == s for d, s in zip(dims, shape))


def check(info: ModelInfo, request: InferRequest) -> None:
    """What the model's config rules out, refused before Triton: unknown
    names, other datatypes, other shapes (Triton checks the rest)."""
    specs = {s.name: s for s in info.inputs}
    for tensor in request.inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise BadRequest(f"unexpected input '{tensor.name}' for model '{info.name}'; "
                             f"it takes {', '.join(sorted(specs))}")
        if tensor.datatype != spec.datatype:
            raise BadRequest(f"input '{tensor.name}' of model '{info.name}' is {spec.datatype}, "
                             f"not {tensor.datatype}")
        if not _check_shape(spec, tensor.array.shape, info.max_batch_size):
            batch = [-1] if info.max_batch_size > 0 else []
            raise BadRequest(f"input '{tensor.name}' of model '{info.name}' has shape {list(tensor.array.shape)}; "
                             f"the model takes {batch + list(spec.dims)}"
                             + (f" with a batch of at most {info.max_batch_size}" if batch else ""))
    names = {s.name for s in info.outputs}
    for out in request.outputs:
        if out.name not in names:
            raise BadRequest(f"unexpected output '{out.name}' for model '{info.name}'; "
                             f"it has {', '.join(sorted(names))}")


def known_version(service: PredictionService, model: str, version: int) -> None:
    """A version Triton's repository index has never listed is unknown (404)."""
    if version not in service.catalog.snapshot.states.get(model, {}):
        raise NotFound(f"Request for unknown model: '{model}' version {version} is not found")


async def infer(service: PredictionService, model: str, version: int | None, request: InferRequest,
                routing_key: str, request_id: str | None) -> Served:
    info = await service.model_info(model)
    check(info, request)
    opts = Options(model=model, routing_key=routing_key)
    if version is not None:
        known_version(service, model, version)
        try:
            outputs, cached = await _serve(service, info, version, request, request_id)
        except VersionUnavailable:
            service.catalog.mark_unready(model, version)
            raise
        return Served(version, "pinned", outputs, cached)
    decision, (outputs, cached) = await service.versions.routed(
        opts, lambda version: _serve(service, info, version, request, request_id))
    service.versions.shadow(model, routing_key, decision.version, _shadow(service, info, request, request_id, outputs))
    return Served(decision.version, decision.routed_by, outputs, cached, decision.requested_version)


def cached(service: PredictionService, model: str, version: int | None, request: InferRequest, routing_key: str,
           request_id: str | None, max_bytes: int) -> Served | None:
    """The answer that the in-process cache tier (or a finished flight)
    already holds, found without awaiting anything and counted as `infer`
    counts a hit (routing, cache and rollout figures, shadow). None when
    anything more would be needed (a miss, a flight in the air, a model not
    loaded yet, a request `infer` would refuse, outputs over `max_bytes`):
    `infer` then serves it, with its own answer or error."""
    info = service.catalog.snapshot.infos.get(model)
    if info is None or not service.catalog.snapshot.ready(model):
        return None
    try:
        check(info, request)
        if version is not None:
            known_version(service, model, version)
    except RouterError:
        return None
    decision = None
    if version is None:
        if (decision := service.versions.resolve(Options(model=model, routing_key=routing_key))) is None:
            return None
        version = decision.version
    key, wanted = _key(service, info, version, request)
    flight = service.flights.pending(key)
    if flight is not None:  # a finished flight holds the stored answer, as in _serve; an open one is awaited there
        if not flight.done() or flight.exception() is not None:
            return None
        outputs = flight.result()
    elif (outputs := complete(unpack(service.cache.peek(key)), wanted)) is None:
        return None
    if sum(a.nbytes for a in outputs.values()) > max_bytes:
        return None
    service.metrics.observe_cache(info.name, version, True)
    if decision is None:
        return Served(version, "pinned", outputs, True)
    service.versions.count_decision(model, decision)
    service.versions.figures.attempt(model, version, True)
    service.versions.shadow(model, routing_key, version, _shadow(service, info, request, request_id, outputs))
    return Served(version, decision.routed_by, outputs, True, decision.requested_version)


def _shadow(service: PredictionService, info: ModelInfo, request: InferRequest, request_id: str | None,
            outputs: dict[str, np.ndarray]):
    """The shadow's work for `Versions.shadow`: the same request to the shadow
    version, each row's answer compared with the one served."""
    async def shadow(version: int) -> None:
        try:
            theirs, _ = await _serve(service, info, version, request, f"{request_id}-shadow" if request_id else None)
        except RouterError:
            service.versions.shadow_result(info.name, version, None)
            return
        classifier, min_cosine = bool(info.labels), service.settings.shadow_min_cosine
        for mine, other in zip(rows(outputs, info), rows(theirs, info)):  # one comparison per row, as /predict
            service.versions.shadow_result(info.name, version, compare_tensors(mine, other, classifier, min_cosine))
    return shadow


def _key(service: PredictionService, info: ModelInfo, version: int,
         request: InferRequest) -> tuple[str, list[tuple[str, int]]]:
    """The request's cache key, and the outputs it asks for as (name, classification count);
    worked out once per request, model and version."""
    memo = (service.settings.cache_namespace, info.name, version)
    found = request.derived.get(memo)
    if found is None:
        wanted = [(o.name, o.class_count) for o in request.outputs]
        found = request.derived[memo] = (
            tensor_cache_key(service.settings.cache_namespace, info.name, version, request.inputs, wanted), wanted)
    return found


async def _serve(service: PredictionService, info: ModelInfo, version: int, request: InferRequest,
                 request_id: str | None) -> tuple[dict[str, np.ndarray], bool]:
    """Cache first, then one Triton call per distinct request in flight;
    only a success is stored."""
    s, metrics = service.settings, service.metrics
    key, wanted = _key(service, info, version, request)
    flight = service.flights.pending(key)
    if flight is not None:
        hit = flight.done()
        metrics.observe_cache(info.name, version, hit)
        if not hit:
            metrics.coalesced.labels(info.name).inc()
        return await service.flights.join(flight), hit  # type: ignore[return-value]
    outputs = complete(unpack(await service.cache.get(key)), wanted)
    metrics.observe_cache(info.name, version, outputs is not None)
    if outputs is not None:
        return outputs, True

    async def work() -> dict[str, np.ndarray]:
        rows = {t.array.shape[0] if t.array.ndim else -1 for t in request.inputs}
        if s.batching and info.max_batch_size > 0 and len(rows) == 1 and 0 < (n := rows.pop()) <= info.max_batch_size:
            specs = tuple((t.name, t.datatype, t.array.shape[1:]) for t in request.inputs)
            key = TritonBatches.tensors_key(info.name, version, specs, tuple(wanted), info.max_batch_size)
            return await service.batches.submit(key, ([t.array for t in request.inputs], request_id), n)
        return await service.timed(info.name, version, service.gateway.infer_tensors(
            info.name, version, [(t.name, t.datatype, t.array) for t in request.inputs], wanted, request_id))

    async def store(result: dict[str, np.ndarray]) -> None:
        await service.cache.set(key, pack(result), jittered_ttl(s.cache_ttl_seconds, s.cache_ttl_jitter))

    result, shared = await service.flights.do(key, work, then=store)  # type: ignore[arg-type]
    if shared:
        metrics.coalesced.labels(info.name).inc()
    return result, False  # type: ignore[return-value]


def rows(outputs: dict[str, np.ndarray], info: ModelInfo) -> list[dict[str, np.ndarray]]:
    """A batched model's outputs, one dict per row of the batch; otherwise the one answer."""
    n = {len(a) for a in outputs.values() if a.ndim}
    if info.max_batch_size <= 0 or len(n) != 1:
        return [outputs]
    return [{k: a[i:i + 1] for k, a in outputs.items()} for i in range(n.pop())]


async def model_ready(service: PredictionService, model: str, version: int | None) -> bool:
    """Without a version: whether the router can route the model now (some
    version ready); with one: Triton's own answer for that version."""
    snap = service.catalog.snapshot
    if not snap.knows(model):
        raise NotFound(f"Request for unknown model: '{model}' is not found")
    if version is None:
        return snap.triton_ready and bool(snap.ready(model))
    try:
        return await service.gateway.model_ready(model, version)
    except RouterError:
        return False


async def model_view(service: PredictionService, model: str, version: int | None, what: str) -> dict:
    """Triton's metadata or config of the model (a version of it, when given)."""
    await service.model_info(model)
    if version is not None:
        known_version(service, model, version)
    fetch = service.gateway.model_metadata if what == "metadata" else service.gateway.model_config
    return await fetch(model, version)
