"""Cache misses batched into Triton requests: the adaptive `Batcher` keyed by
model, version and output request, one Triton request id per batch (each
caller's logged against it), the answer split back per caller. Used by the
/predict path (scores) and the /v2 path (tensors)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Awaitable, Callable

import numpy as np

from router.dataplane.batcher import Batcher, BatcherClosed, BatcherFull
from router.dataplane.gateway import Gateway
from router.errors import Overloaded, TritonTimeout, TritonUnavailable
from router.metrics import Metrics
from router.settings import Settings

batch_log = logging.getLogger("router.access.batch")  # one line per batched Triton request, written in blocks

Item = tuple[list[np.ndarray], "str | None"]  # a caller's input arrays and its request id


class TritonBatches:
    def __init__(self, settings: Settings, gateway: Gateway, metrics: Metrics,
                 timed: Callable[[str, int, Awaitable], Awaitable]) -> None:
        self.settings = settings
        self.gateway = gateway
        self.metrics = metrics
        self.timed = timed  # the service's one timed, counted Triton call
        self.batcher: Batcher = Batcher(self._call, max_batch=lambda key: key[-1],
                                        window_s=settings.batch_window_ms / 1000 or None,
                                        max_queue=settings.batch_max_queue,
                                        max_in_flight=settings.batch_in_flight, on_batch=metrics.observe_batch)

    @staticmethod
    def scores_key(model: str, version: int, input_name: str, output_name: str, top_k: int, batch: np.ndarray,
                   max_batch_size: int) -> tuple:
        return ("scores", model, version, input_name, output_name, top_k, batch.shape[1:], str(batch.dtype),
                max_batch_size)

    @staticmethod
    def tensors_key(model: str, version: int, specs: tuple, wanted: tuple, max_batch_size: int) -> tuple:
        return ("tensors", model, version, specs, wanted, max_batch_size)

    async def submit(self, key: tuple, item: Item, rows: int):
        """A Triton call shared with the misses of the same key waiting meanwhile.
        The wait for a place in a call and the call together take at most
        TRITON_TIMEOUT_S, as one call alone would (504 after it)."""
        try:
            async with asyncio.timeout(self.settings.triton_timeout_s):  # no task of its own, unlike wait_for
                return await self.batcher.submit(key, item, rows)
        except TimeoutError:
            self.metrics.triton_errors.labels(key[1], TritonTimeout.code).inc()
            raise TritonTimeout("Triton did not answer in time") from None
        except (BatcherFull, BatcherClosed) as exc:
            raise Overloaded(f"too many requests wait for {key[1]!r} v{key[2]}; retry shortly",
                             {"Retry-After": "1"}) from exc

    async def close(self) -> None:
        await self.batcher.close()

    async def _call(self, key: tuple, items: list[Item]) -> list:
        """One Triton request for several callers' rows: its own request id, each
        caller's logged against it; the answer split back per caller."""
        model, version = key[1], key[2]
        ids = [rid for _, rid in items]
        if len(items) == 1:
            rid = ids[0]
        else:
            rid = f"batch-{uuid.uuid4().hex[:16]}"
            batch_log.info("Triton request %s carries %d requests", rid, len(items),  # the line is the batch's
                           extra={"request_id": rid, "triton_request_id": rid, "request_ids": ids, "model": model,
                                  "version": version})
        counts = [len(arrays[0]) for arrays, _ in items]
        inputs = [np.concatenate([arrays[i] for arrays, _ in items]) if len(items) > 1 else items[0][0][i]
                  for i in range(len(items[0][0]))]
        if key[0] == "scores":
            _, _, _, input_name, output_name, top_k, *_ = key
            rows = await self.timed(model, version, self.gateway.infer(
                model, version, input_name, output_name, inputs[0], top_k, rid))
            return split(rows, counts, lambda part, a, b: part[a:b])
        _, _, _, specs, wanted, _ = key
        outputs = await self.timed(model, version, self.gateway.infer_tensors(
            model, version, [(name, datatype, array) for (name, datatype, _), array in zip(specs, inputs)],
            list(wanted), rid))
        total = sum(counts)
        if any(a.ndim == 0 or len(a) != total for a in outputs.values()):
            raise TritonUnavailable(f"Triton answered {model} v{version} with outputs that are not one row per input "
                                    "row; the batch cannot be split")
        return split(outputs, counts, lambda part, a, b: {k: v[a:b] for k, v in part.items()})


def split(whole, counts: list[int], take) -> list:
    """`whole` (rows in order) cut back into one part per caller of `counts` rows."""
    total = sum(counts)
    if isinstance(whole, list) and len(whole) != total:
        raise TritonUnavailable(f"Triton answered {len(whole)} rows for {total}; the batch cannot be split")
    parts, at = [], 0
    for n in counts:
        parts.append(take(whole, at, at + n))
        at += n
    return parts
