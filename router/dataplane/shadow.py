"""Shadow traffic: a share of requests (by the same sticky key as the canary)
also run on the shadow version once the client's answer is made, in a task
of their own, at most SHADOW_MAX_IN_FLIGHT at once (more are skipped and
counted), never failing or delaying the answer. The two answers are compared:
top-1 label for classifiers, max absolute difference and cosine similarity
for tensors."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np

from router.dataplane.types import Scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Comparison:
    agree: bool
    max_abs_diff: float | None = None
    cosine: float | None = None


def compare_scores(primary: Scores, shadow: Scores) -> Comparison:
    """Two classifier answers (labels with scores, best first): the top-1 label
    agrees or not; the scores of the labels both list, their largest difference."""
    agree = bool(primary) and bool(shadow) and primary[0][0] == shadow[0][0]
    theirs = dict(shadow)
    diffs = [abs(score - theirs[label]) for label, score in primary if label in theirs]
    return Comparison(agree, max(diffs) if diffs else None)


def compare_tensors(primary: dict[str, np.ndarray], shadow: dict[str, np.ndarray], classifier: bool,
                    min_cosine: float) -> Comparison:
    """Tensor outputs by name. Classification strings (`score:index:label`)
    agree on the first entry of each row; a classifier's scores agree on each
    row's argmax; other tensors agree when their cosine similarity reaches
    `min_cosine`. The max abs difference and cosine are over all numeric outputs."""
    agree = True
    diffs: list[float] = []
    cosines: list[float] = []
    for name, a in primary.items():
        b = shadow.get(name)
        if b is None or a.shape != b.shape:
            return Comparison(False)
        if a.dtype.kind in "OSU":
            agree &= bool(np.array_equal(_top_labels(a), _top_labels(b)))
            continue
        x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        if x.size:
            diffs.append(float(np.max(np.abs(x - y))))
        norm = float(np.linalg.norm(x) * np.linalg.norm(y))
        cosine = float(np.dot(x, y) / norm) if norm > 0 else float(np.array_equal(x, y))
        cosines.append(cosine)
        if classifier and a.ndim >= 1 and a.shape[-1] > 1:
            agree &= bool(np.array_equal(np.argmax(a, axis=-1), np.argmax(b, axis=-1)))
        else:
            agree &= cosine >= min_cosine
    return Comparison(agree, max(diffs) if diffs else None, min(cosines) if cosines else None)


def _top_labels(classes: np.ndarray) -> np.ndarray:
    """`score:index[:label]` strings -> each row's first entry's index."""
    rows = classes.reshape(classes.shape[0], -1) if classes.ndim > 1 else classes.reshape(1, -1)
    first = rows[:, 0]
    return np.array([(v.decode() if isinstance(v, bytes) else str(v)).split(":")[1:2] for v in first], dtype=object)


class Shadows:
    """The shadow calls in flight, bounded."""

    def __init__(self, max_in_flight: int, on_skip: Callable[[], None]) -> None:
        self.max_in_flight = max_in_flight
        self.on_skip = on_skip
        self._tasks: set[asyncio.Task] = set()

    def run(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Starts `work` in its own task; False (skipped) when too many are in flight."""
        if len(self._tasks) >= self.max_in_flight:
            self.on_skip()
            return False
        task = asyncio.get_running_loop().create_task(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    @staticmethod
    async def _guarded(work: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(0)  # the client's answer first
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:  # a shadow must never take anything else down
            log.exception("shadow call failed unexpectedly")

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
