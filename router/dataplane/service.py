"""Predictions, knowing nothing of HTTP: model lookup, then cache,
single-flight and batching around one Triton call, under the version
routing of versions.py; and the views of what the dataplane can serve."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Awaitable, TypeVar

import numpy as np
import orjson

from router.dataplane import views
from router.dataplane.cache import Cache, cache_key, dtype_name, jittered_ttl
from router.dataplane.catalog import Catalog, ModelInfo
from router.dataplane.gateway import Gateway
from router.dataplane.batching import TritonBatches
from router.dataplane.inputs import Inputs
from router.dataplane.routing import Decision
from router.dataplane.shadow import compare_scores
from router.dataplane.singleflight import SingleFlight
from router.dataplane.types import Item, Options, Prediction, Scores
from router.dataplane.versions import Versions
from router.errors import InvalidInput, ModelUnavailable, NotFound, RouterError, TritonUnavailable
from router.metrics import Metrics
from router.settings import Settings

T = TypeVar("T")


class PredictionService:
    def __init__(self, settings: Settings, gateway: Gateway, catalog: Catalog, cache: Cache,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.gateway = gateway
        self.catalog = catalog
        self.cache = cache
        self.metrics = metrics
        self.flights: SingleFlight[list[Scores]] = SingleFlight(
            cancelled=lambda: TritonUnavailable("the Triton call was cancelled"))
        self.versions = Versions(settings, catalog, metrics)
        self.inputs = Inputs(settings)
        self.batches = TritonBatches(settings, gateway, metrics, self.timed)

    async def close(self) -> None:
        await self.versions.close()
        await self.batches.close()
        self.inputs.close()

    # --- views ---------------------------------------------------------------

    def readiness(self) -> dict:
        """Ready when Triton and every default version are; not ready either when
        the catalog has not heard from Triton for two refreshes (a refresh stuck
        on a Triton that hangs)."""
        s = self.settings
        snap = self.catalog.snapshot
        if time.monotonic() - snap.taken_at > 2 * s.triton_refresh_s + s.triton_ready_timeout_s:
            snap = replace(snap, triton_ready=False)
        # Models loaded on first use count once loaded; with LOAD_ALL_MODELS, every model does.
        loaded = set(snap.states) if s.load_all_models else {m for m in snap.states if snap.ready(m)}
        return views.readiness(snap, self.versions.route, loaded | {s.default_model} | set(s.model_routes))

    def models_view(self, figures: dict[str, dict | None] | None = None) -> dict:
        """The models view; `figures`: each model's live rollout figures, when read."""
        return views.models_view(self.catalog.snapshot, self.versions.route, self.settings.default_model,
                                 self.versions.rollout,
                                 figures or {})

    async def health(self) -> dict:
        snap = self.catalog.snapshot
        redis = "disabled" if self.cache.backend == "memory" else ("ok" if await self.cache.healthy() else "down")
        return {"status": "ok", "model_loaded": snap.triton_ready and bool(snap.ready(self.settings.default_model)),
                "triton": "ready" if snap.triton_ready else "unreachable", "redis": redis}

    # --- predictions ---------------------------------------------------------

    async def model_info(self, model: str) -> ModelInfo:
        snap = self.catalog.snapshot
        if not snap.triton_ready and not snap.states:
            snap = await self.catalog.refresh()
            if not snap.triton_ready:
                raise TritonUnavailable("Triton is unreachable")
        if not snap.knows(model):
            raise NotFound(f"unknown model {model[:100]!r}; available: {', '.join(sorted(snap.states)) or 'none'}")
        if model not in snap.infos or not snap.ready(model):
            if self.settings.load_all_models:
                raise ModelUnavailable(f"no version of {model!r} is ready")
            await self.catalog.ensure_loaded(model)  # lazy loading on first use
            if model not in self.catalog.snapshot.infos:
                raise ModelUnavailable(f"no version of {model!r} is ready")
        return self.catalog.snapshot.infos[model]

    def cached(self, item: Item, opts: Options, request_id: str | None) -> Prediction | None:
        """The answer to one text item that the in-process cache tier already
        holds, found without awaiting anything, and counted as `predict`
        counts a hit (routing, cache and rollout figures, shadow). None when
        anything more would be needed (a miss, a flight in the air, an image, a
        model not loaded yet, an input `predict` would refuse): `predict` then
        serves it, with its own answer or error."""
        if item.image is not None or item.text is None or not 1 <= opts.top_k <= self.settings.max_top_k:
            return None
        info = self.catalog.snapshot.infos.get(opts.model)
        if info is None or info.input_kind != "text_utf8" or (decision := self.versions.resolve(opts)) is None:
            return None
        top_k = min(opts.top_k, len(info.labels) or opts.top_k)
        derived = item.derived.get((info.name, decision.version, top_k))
        if derived is None or derived[0] is not info:  # worked out once per model (as now described) and version
            try:
                tensor = self.inputs.tensor(info, item)
            except RouterError:
                return None
            derived = item.derived[(info.name, decision.version, top_k)] = (
                info, tensor, self._keys(info, decision.version, [tensor], top_k)[0])
        _, tensor, key = derived
        flight = self.flights.pending(key)
        if flight is not None:  # a finished flight holds the stored answer, as in _serve; an open one is awaited there
            if not flight.done() or flight.exception() is not None:
                return None
            scores = flight.result()[0]
        elif (scores := _decode(self.cache.peek(key))) is None:
            return None
        self.versions.count_decision(opts.model, decision)
        self.metrics.observe_cache(info.name, decision.version, True)
        if opts.requested_version is None:
            self.versions.figures.attempt(opts.model, decision.version, True)
        return self._answers(info, opts, decision, [item], [tensor], top_k, request_id, [(scores, True)])[0]

    async def predict(self, item: Item, opts: Options, request_id: str | None) -> Prediction:
        return (await self.predict_many([item], opts, request_id))[0]

    async def check(self, items: list[Item], opts: Options) -> None:
        """What prepare would refuse, refused without decoding any image:
        the model, top_k, every text, and each image's header (format, size,
        aspect). Jobs call it at submit time, so that the worker's prepare
        decodes each image once; an image whose pixels then turn out to be
        corrupt fails the job with the same 422."""
        info = await self._model_for(opts)
        await self.inputs.screen(info, items)

    async def prepare(self, items: list[Item], opts: Options) -> tuple[ModelInfo, list[np.ndarray], int]:
        """Everything a prediction would refuse, refused here: the model, the
        inputs, top_k. Images are decoded in the pool; the first item in order
        that is refused gives the error."""
        info = await self._model_for(opts)
        tensors = await self.inputs.screen(info, items)
        images = [i for i, tensor in enumerate(tensors) if tensor is None]
        if images:
            for i, tensor in zip(images, await self.inputs.decode_images(info, [items[i] for i in images])):
                tensors[i] = tensor
        return info, tensors, min(opts.top_k, len(info.labels) or opts.top_k)  # type: ignore[return-value]

    async def _model_for(self, opts: Options) -> ModelInfo:
        if opts.top_k < 1 or opts.top_k > self.settings.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {self.settings.max_top_k}")
        info = await self.model_info(opts.model)
        if info.input_kind is None:
            raise InvalidInput(f"model {info.name!r} takes raw tensors, not text or an image: "
                               f"use POST /v2/models/{info.name}/infer (the Open Inference Protocol)")
        return info

    async def predict_many(self, items: list[Item], opts: Options, request_id: str | None) -> list[Prediction]:
        info, tensors, top_k = await self.prepare(items, opts)
        decision, results = await self.versions.routed(
            opts, lambda version: self._serve(info, version, tensors, top_k, request_id))
        return self._answers(info, opts, decision, items, tensors, top_k, request_id, results)

    def _answers(self, info: ModelInfo, opts: Options, decision: Decision, items: list[Item],
                 tensors: list[np.ndarray], top_k: int, request_id: str | None,
                 results: list[tuple[Scores, bool]]) -> list[Prediction]:
        """A served request's predictions, its shadow call started."""
        if opts.requested_version is None:
            primary = [scores for scores, _ in results]
            self.versions.shadow(opts.model, opts.routing_key, decision.version,
                        lambda version: self._shadow(info, version, tensors, top_k, request_id, primary))
        texts = [item.text if item.image is None else None for item in items]
        return [Prediction(opts.model, decision.version, decision.routed_by, scores, cached, text,
                           decision.requested_version)
                for (scores, cached), text in zip(results, texts)]

    async def _shadow(self, info: ModelInfo, version: int, tensors: list[np.ndarray], top_k: int,
                      request_id: str | None, primary: list[Scores]) -> None:
        try:
            rows = await self._serve(info, version, tensors, top_k, f"{request_id}-shadow" if request_id else None)
        except RouterError:
            self.versions.shadow_result(info.name, version, None)
            return
        for mine, theirs in zip(primary, rows):
            self.versions.shadow_result(info.name, version, compare_scores(mine, theirs[0]))

    async def _serve(self, info: ModelInfo, version: int, tensors: list[np.ndarray], top_k: int,
                     request_id: str | None) -> list[tuple[Scores, bool]]:
        """Cache first; the misses as one Triton request (single-flight when
        there is one); results stored after success only."""
        keys = self._keys(info, version, tensors, top_k)
        if len(keys) == 1 and (flight := self.flights.pending(keys[0])) is not None:
            # A finished flight holds a stored answer (a hit); an open one is joined (a coalesced miss).
            hit = flight.done()
            self.metrics.observe_cache(info.name, version, hit)
            if not hit:
                self.metrics.coalesced.labels(info.name).inc()
            return [((await self.flights.join(flight))[0], hit)]
        cached = await self.cache.mget(keys)
        results: list[tuple[Scores, bool] | None] = [None] * len(keys)
        misses = []
        for i, raw in enumerate(cached):
            scores = _decode(raw)
            self.metrics.observe_cache(info.name, version, scores is not None)
            if scores is not None:
                results[i] = (scores, True)
            else:
                misses.append(i)
        if len(misses) == 1:
            i = misses[0]
            rows, shared = await self.flights.do(
                keys[i], lambda: self._infer(info, version, [tensors[i]], top_k, request_id),
                then=lambda rows: self._store([keys[i]], rows))
            if shared:
                self.metrics.coalesced.labels(info.name).inc()
            results[i] = (rows[0], False)
        elif misses:
            batch = await self._infer(info, version, [tensors[i] for i in misses], top_k, request_id)
            await self._store([keys[i] for i in misses], batch)
            for i, scores in zip(misses, batch):
                results[i] = (scores, False)
        return results  # type: ignore[return-value]

    def _keys(self, info: ModelInfo, version: int, tensors: list[np.ndarray], top_k: int) -> list[str]:
        namespace = self.settings.cache_namespace
        return [cache_key(namespace, info.name, version, t.tobytes(), t.shape[1:], dtype_name(t.dtype),
                          f"top_k={top_k}") for t in tensors]

    async def _infer(self, info: ModelInfo, version: int, tensors: list[np.ndarray], top_k: int,
                     request_id: str | None) -> list[Scores]:
        batch = np.concatenate(tensors) if len(tensors) > 1 else tensors[0]
        if not self.settings.batching or info.max_batch_size <= 0 or len(batch) > info.max_batch_size:
            return await self.timed(info.name, version, self.gateway.infer(
                info.name, version, info.input_name, info.output_name, batch, top_k, request_id))
        key = TritonBatches.scores_key(info.name, version, info.input_name, info.output_name, top_k, batch,
                                       info.max_batch_size)
        return await self.batches.submit(key, ([batch], request_id), len(batch))

    async def timed(self, model: str, version: int, call: Awaitable[T]) -> T:
        """One Triton call: its time (the rollout's latency figures are these,
        never a cache's) and its failure, counted."""
        started = time.perf_counter()
        try:
            result = await call
        except RouterError as exc:
            self.metrics.triton_errors.labels(model, exc.code).inc()
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.triton_seconds.labels(model, str(version)).observe(elapsed)
        self.versions.figures.latency(model, version, elapsed)
        return result

    async def _store(self, keys: list[str], rows: list[Scores]) -> None:
        """Successful results only: an error never reaches here."""
        for key, scores in zip(keys, rows):
            await self.cache.set(key, json.dumps(scores).encode(),
                                 jittered_ttl(self.settings.cache_ttl_seconds, self.settings.cache_ttl_jitter))


def _decode(raw: bytes | None) -> Scores | None:
    """A cached entry's scores; anything else (unreadable, empty, another
    shape: the cache is not trusted) is a miss."""
    if raw is None:
        return None
    try:
        scores = [(str(label), float(score)) for label, score in orjson.loads(raw)]
    except (ValueError, TypeError):
        return None
    return scores or None
