"""Per-version figures of a rollout, counted in every replica and summed
across them: requests, errors, a latency histogram, and the shadow's
comparisons. Each process tallies in memory on the request path (a few dict
increments) and adds its tallies to one Redis hash per model and measurement
window every ROLLOUT_FIGURES_FLUSH_S; the controller reads those hashes.
Without Redis the tallies stay in the process, which is then the only one."""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections import defaultdict
from dataclasses import dataclass

from router.aio import cancel

log = logging.getLogger(__name__)

PREFIX = "control:figures:"
FLOAT_FIELDS = (":sd", ":sc")

# Latency buckets: 0.1 ms to about 60 s, 12 per factor of ten (each about 21% wider than
# the last), so that a p99 read from them is within about 10% of the exact one.
BOUNDS: tuple[float, ...] = tuple(1e-4 * 10 ** (i / 12) for i in range(71))


def key(model: str, window: int) -> str:
    return f"{PREFIX}{model}:{window}"


class Recorder:
    """This process's tallies since the last flush, by (model, window)."""

    def __init__(self) -> None:
        self._windows: dict[str, int | None] = {}
        self._pending: dict[tuple[str, int], defaultdict[str, float]] = {}

    def window(self, model: str, window: int | None) -> None:
        self._windows[model] = window

    def _tally(self, model: str) -> defaultdict[str, float] | None:
        window = self._windows.get(model)
        if window is None:
            return None
        tally = self._pending.get((model, window))
        if tally is None:
            tally = self._pending[(model, window)] = defaultdict(float)
        return tally

    def attempt(self, model: str, version: int, ok: bool) -> None:
        """One routed request's try of one version, and whether it failed (a
        failure that another version then served still counts against this one)."""
        tally = self._tally(model)
        if tally is None:
            return
        tally[f"{version}:n"] += 1
        if not ok:
            tally[f"{version}:e"] += 1

    def latency(self, model: str, version: int, seconds: float) -> None:
        """One Triton call of one version: the latency the gate compares (a
        cache hit is no version's latency)."""
        tally = self._tally(model)
        if tally is not None:
            tally[f"{version}:b{bisect.bisect_left(BOUNDS, seconds)}"] += 1

    def shadow(self, model: str, version: int, agree: bool | None, max_abs_diff: float | None = None,
               cosine: float | None = None) -> None:
        """One shadow call: compared (agree True/False) or failed (None)."""
        tally = self._tally(model)
        if tally is None:
            return
        tally[f"{version}:sn"] += 1
        if agree is None:
            tally[f"{version}:se"] += 1
            return
        tally[f"{version}:sa"] += int(agree)
        if max_abs_diff is not None and math.isfinite(max_abs_diff):
            tally[f"{version}:sd"] += max_abs_diff
        if cosine is not None and math.isfinite(cosine):
            tally[f"{version}:sc"] += cosine
            tally[f"{version}:sk"] += 1

    def drain(self) -> dict[tuple[str, int], dict[str, float]]:
        pending, self._pending = self._pending, {}
        return {k: dict(v) for k, v in pending.items()}


@dataclass(frozen=True)
class VersionFigures:
    version: int | None
    requests: int
    errors: int
    p99_s: float | None
    timings: int = 0  # Triton calls timed (the p99's samples)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def view(self) -> dict:
        return {"version": self.version, "requests": self.requests, "errors": self.errors,
                "error_rate": round(self.error_rate, 6), "timings": self.timings,
                "p99_ms": None if self.p99_s is None else round(self.p99_s * 1000, 3)}


@dataclass(frozen=True)
class ShadowFigures:
    version: int | None
    requests: int
    errors: int
    agreements: int
    mean_max_abs_diff: float | None
    mean_cosine: float | None

    @property
    def compared(self) -> int:
        return self.requests - self.errors

    @property
    def agreement(self) -> float | None:
        return self.agreements / self.compared if self.compared else None

    def view(self) -> dict:
        agreement = self.agreement
        return {"version": self.version, "requests": self.requests, "errors": self.errors,
                "compared": self.compared, "agreements": self.agreements,
                "agreement": None if agreement is None else round(agreement, 6),
                "mean_max_abs_diff": self.mean_max_abs_diff, "mean_cosine": self.mean_cosine}


def merge(hashes: list[dict]) -> dict[str, float]:
    total: defaultdict[str, float] = defaultdict(float)
    for h in hashes:
        for field, value in h.items():
            total[field.decode() if isinstance(field, bytes) else field] += float(value)
    return dict(total)


def quantile(counts: dict[int, float], q: float) -> float | None:
    """The q-quantile from bucket counts, interpolated inside its bucket."""
    n = sum(counts.values())
    if n <= 0:
        return None
    rank = q * n
    seen = 0.0
    for index in sorted(counts):
        c = counts[index]
        if seen + c >= rank:
            low = BOUNDS[index - 1] if index > 0 else 0.0
            high = BOUNDS[index] if index < len(BOUNDS) else BOUNDS[-1] * 2
            return low + (high - low) * ((rank - seen) / c if c else 1.0)
        seen += c
    return BOUNDS[-1]


def version_figures(totals: dict[str, float], version: int | None) -> VersionFigures:
    if version is None:
        return VersionFigures(None, 0, 0, None)
    prefix = f"{version}:b"
    counts = {int(f[len(prefix):]): v for f, v in totals.items() if f.startswith(prefix)}
    return VersionFigures(version, int(totals.get(f"{version}:n", 0)), int(totals.get(f"{version}:e", 0)),
                          quantile(counts, 0.99), int(sum(counts.values())))


def shadow_figures(totals: dict[str, float], version: int | None) -> ShadowFigures | None:
    if version is None or not totals.get(f"{version}:sn"):
        return None
    compared = totals.get(f"{version}:sn", 0) - totals.get(f"{version}:se", 0)
    cosines = totals.get(f"{version}:sk", 0)
    return ShadowFigures(version, int(totals[f"{version}:sn"]), int(totals.get(f"{version}:se", 0)),
                         int(totals.get(f"{version}:sa", 0)),
                         _mean(totals.get(f"{version}:sd"), compared), _mean(totals.get(f"{version}:sc"), cosines))


def _mean(total: float | None, n: float) -> float | None:
    if total is None or not n or math.isnan(total):
        return None
    return round(total / n, 6)


async def live(figures, state, default: int | None) -> dict:
    """The figures of a state's current window: canary, default and shadow."""
    totals = await figures.read(state.model, [state.window])
    shadow = shadow_figures(totals, state.shadow_version)
    return {"window": state.window, "since": state.window_started_at,
            "canary": version_figures(totals, state.canary_version).view() if state.canary_version else None,
            "default": version_figures(totals, default).view(), "shadow": shadow.view() if shadow else None}


class MemoryFigures:
    """One process's figures, summed in place."""

    def __init__(self) -> None:
        self._totals: dict[tuple[str, int], defaultdict[str, float]] = defaultdict(lambda: defaultdict(float))

    async def add(self, batch: dict[tuple[str, int], dict[str, float]]) -> None:
        for k, fields in batch.items():
            for field, value in fields.items():
                self._totals[k][field] += value

    async def read(self, model: str, windows: list[int]) -> dict[str, float]:
        return merge([dict(self._totals.get((model, w), {})) for w in windows])


class RedisFigures:
    def __init__(self, client, ttl_s: int) -> None:
        self.client = client
        self.ttl_s = ttl_s

    async def add(self, batch: dict[tuple[str, int], dict[str, float]]) -> None:
        async with self.client.pipeline(transaction=True) as pipe:
            for (model, window), fields in batch.items():
                k = key(model, window)
                for field, value in fields.items():
                    if field.endswith(FLOAT_FIELDS):  # sums of differences and cosines
                        pipe.hincrbyfloat(k, field, value)
                    else:  # counts
                        pipe.hincrby(k, field, int(value))
                pipe.expire(k, self.ttl_s)
            await pipe.execute()

    async def read(self, model: str, windows: list[int]) -> dict[str, float]:
        async with self.client.pipeline(transaction=False) as pipe:
            for w in windows:
                pipe.hgetall(key(model, w))
            return merge(await pipe.execute())


class Flusher:
    """Moves the recorder's tallies to the figures store every `every_s`. A flush
    is one MULTI/EXEC, so it counts whole or not at all; what a failed one held
    is added to the next (bounded). Only a reply lost after Redis applied it
    can count one flush twice."""

    MAX_KEPT = 10_000  # (model, window) tallies kept while the store is down

    def __init__(self, recorder: Recorder, store, every_s: float) -> None:
        self.recorder = recorder
        self.store = store
        self.every_s = every_s
        self._task: asyncio.Task | None = None
        self._kept: dict[tuple[str, int], dict[str, float]] = {}

    async def flush(self) -> None:
        batch = self.recorder.drain()
        for k, fields in self._kept.items():
            into = batch.setdefault(k, {})
            for field, value in fields.items():
                into[field] = into.get(field, 0.0) + value
        self._kept = {}
        if not batch:
            return
        try:
            await self.store.add(batch)
        except Exception as exc:
            from redis.exceptions import ResponseError

            if isinstance(exc, ResponseError):  # Redis refused a command: EXEC may have applied the rest
                log.warning("rollout figures refused by Redis (%s); this flush's are dropped", exc)
            elif len(batch) <= self.MAX_KEPT:
                self._kept = batch
                log.warning("cannot store rollout figures (%s); kept for the next flush", exc)
            else:
                log.warning("cannot store rollout figures (%s); %d windows' figures dropped", exc, len(batch))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            await self.flush()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        try:
            await asyncio.wait_for(self.flush(), 2.0)
        except (asyncio.TimeoutError, Exception):
            pass
