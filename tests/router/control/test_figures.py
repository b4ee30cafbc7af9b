"""A rollout's figures: the per-process recorder, quantiles from its latency
buckets, the figures read from summed tallies, the memory and Redis stores,
and the flusher between them."""

from __future__ import annotations

import asyncio
import bisect

import numpy as np
import pytest
import redis.asyncio as aioredis

from router.control.figures import (BOUNDS, Flusher, MemoryFigures, Recorder, RedisFigures, key, quantile,
                                    shadow_figures, version_figures)

SLOW = 0.0105  # between BOUNDS[24] (10 ms) and BOUNDS[25]


def test_recorder_counts_only_models_with_a_window():
    recorder = Recorder()
    recorder.attempt("sentiment", 1, SLOW, True)  # no window yet: not counted
    recorder.window("sentiment", 7)
    recorder.attempt("sentiment", 1, SLOW, True)
    recorder.attempt("sentiment", 1, SLOW, False)
    recorder.attempt("sentiment", 2, 0.2, True)
    recorder.attempt("digits", 1, SLOW, True)
    assert BOUNDS[24] < SLOW <= BOUNDS[25]
    high = bisect.bisect_left(BOUNDS, 0.2)
    assert recorder.drain() == {("sentiment", 7): {"1:n": 2, "1:e": 1, "1:b25": 2, "2:n": 1, f"2:b{high}": 1}}
    assert recorder.drain() == {}
    recorder.window("sentiment", None)
    recorder.attempt("sentiment", 1, SLOW, True)
    assert recorder.drain() == {}


def test_recorder_keeps_windows_apart():
    recorder = Recorder()
    recorder.window("sentiment", 1)
    recorder.attempt("sentiment", 1, SLOW, True)
    recorder.window("sentiment", 2)
    recorder.attempt("sentiment", 1, SLOW, False)
    drained = recorder.drain()
    assert drained[("sentiment", 1)] == {"1:n": 1, "1:b25": 1}
    assert drained[("sentiment", 2)] == {"1:n": 1, "1:e": 1, "1:b25": 1}


def test_shadow_tallies_and_figures():
    recorder = Recorder()
    recorder.window("sentiment", 3)
    recorder.shadow("sentiment", 2, True, 0.1, 0.99)
    recorder.shadow("sentiment", 2, False, 0.3, None)
    recorder.shadow("sentiment", 2, None)
    totals = recorder.drain()[("sentiment", 3)]
    assert totals == pytest.approx({"2:sn": 3, "2:se": 1, "2:sa": 1, "2:sd": 0.4, "2:sc": 0.99, "2:sk": 1})
    figures = shadow_figures(totals, 2)
    assert (figures.requests, figures.errors, figures.compared, figures.agreements) == (3, 1, 2, 1)
    assert figures.agreement == 0.5
    assert (figures.mean_max_abs_diff, figures.mean_cosine) == (0.2, 0.99)
    assert shadow_figures(totals, 5) is None and shadow_figures(totals, None) is None


def test_quantile_interpolates_within_a_bucket():
    assert quantile({}, 0.99) is None
    assert quantile({10: 100}, 0.5) == pytest.approx((BOUNDS[9] + BOUNDS[10]) / 2)
    assert quantile({10: 50, 20: 50}, 0.99) == pytest.approx(BOUNDS[19] + (BOUNDS[20] - BOUNDS[19]) * 0.98)


def test_quantile_is_close_to_the_exact_one():
    rng = np.random.default_rng(7)
    samples = rng.lognormal(mean=np.log(0.02), sigma=0.6, size=1000)
    counts: dict[int, float] = {}
    for s in samples:
        index = bisect.bisect_left(BOUNDS, s)
        counts[index] = counts.get(index, 0) + 1
    for q in (0.5, 0.9, 0.99):
        assert quantile(counts, q) == pytest.approx(float(np.quantile(samples, q)), rel=0.1), q


def test_version_figures_from_merged_totals():
    totals = {"1:n": 200, "1:e": 3, "1:b25": 200, "11:n": 5, "11:b50": 5}
    one = version_figures(totals, 1)
    assert (one.version, one.requests, one.errors, one.error_rate) == (1, 200, 3, 0.015)
    assert BOUNDS[24] < one.p99_s <= BOUNDS[25], "version 11's buckets are not version 1's"
    assert one.view() == {"version": 1, "requests": 200, "errors": 3, "error_rate": 0.015,
                          "p99_ms": round(one.p99_s * 1000, 3)}
    assert version_figures(totals, 2) == version_figures({}, 2)
    assert (version_figures(totals, 2).requests, version_figures(totals, 2).p99_s) == (0, None)
    assert version_figures(totals, None).requests == 0


def test_memory_figures_sum_across_adds_and_windows():
    async def scenario():
        figures = MemoryFigures()
        await figures.add({("sentiment", 1): {"1:n": 2, "2:sd": 0.25}})
        await figures.add({("sentiment", 1): {"1:n": 3, "2:sd": 1.0}, ("sentiment", 2): {"1:n": 4},
                           ("digits", 1): {"1:n": 100}})
        return [await figures.read("sentiment", w) for w in ([1], [1, 2], [3])]

    one, both, none = asyncio.run(scenario())
    assert one == {"1:n": 5, "2:sd": 1.25}
    assert both == {"1:n": 9, "2:sd": 1.25}
    assert none == {}


def run_redis(url, scenario):
    async def main():
        client = aioredis.Redis.from_url(url)
        try:
            return await scenario(RedisFigures(client, ttl_s=600))
        finally:
            await client.aclose()
    return asyncio.run(main())


def test_redis_figures_sum_ints_and_floats_with_an_expiry(jobs_redis, db):
    async def scenario(figures):
        await figures.add({("sentiment", 1): {"1:n": 2.0, "1:b25": 2.0, "2:sd": 0.25, "2:sc": 0.5}})
        await figures.add({("sentiment", 1): {"1:n": 3.0, "2:sd": 0.5, "2:sc": 0.75},
                           ("sentiment", 2): {"1:n": 4.0}})
        return await figures.read("sentiment", [1]), await figures.read("sentiment", [1, 2])

    one, both = run_redis(jobs_redis.url, scenario)
    assert one == {"1:n": 5.0, "1:b25": 2.0, "2:sd": 0.75, "2:sc": 1.25}
    assert both == {"1:n": 9.0, "1:b25": 2.0, "2:sd": 0.75, "2:sc": 1.25}
    assert 0 < db.ttl(key("sentiment", 1)) <= 600 and 0 < db.ttl(key("sentiment", 2)) <= 600
    assert db.hget(key("sentiment", 1), "1:n") == b"5", "counts stay integers"


def test_redis_figures_add_a_whole_float_to_a_fractional_one(jobs_redis, db):
    async def scenario(figures):
        await figures.add({("sentiment", 1): {"2:sd": 0.25}})
        await figures.add({("sentiment", 1): {"2:sd": 1.0}})
        return await figures.read("sentiment", [1])

    assert run_redis(jobs_redis.url, scenario) == {"2:sd": 1.25}


class FlakyFigures:
    """A figures store whose first `failures` adds raise."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[dict] = []

    async def add(self, batch):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis is down")
        self.batches.append(batch)


def test_flusher_keeps_a_failed_batch_for_the_next_flush():
    recorder, store = Recorder(), FlakyFigures(failures=1)
    recorder.window("sentiment", 1)
    flusher = Flusher(recorder, store, every_s=60)

    async def scenario():
        recorder.attempt("sentiment", 1, SLOW, False)
        await flusher.flush()  # fails: kept
        recorder.attempt("sentiment", 1, SLOW, True)
        recorder.window("sentiment", 2)
        recorder.attempt("sentiment", 1, SLOW, True)
        await flusher.flush()
        await flusher.flush()  # nothing new: no add

    asyncio.run(scenario())
    assert store.batches == [{("sentiment", 1): {"1:n": 2.0, "1:e": 1.0, "1:b25": 2.0},
                              ("sentiment", 2): {"1:n": 1.0, "1:b25": 1.0}}]


def test_flusher_stop_flushes_what_is_left():
    recorder, store = Recorder(), FlakyFigures(failures=0)
    recorder.window("sentiment", 1)

    async def scenario():
        flusher = Flusher(recorder, store, every_s=60)
        flusher.start()
        recorder.attempt("sentiment", 2, SLOW, True)
        await flusher.stop()

    asyncio.run(scenario())
    assert store.batches == [{("sentiment", 1): {"2:n": 1.0, "2:b25": 1.0}}]
