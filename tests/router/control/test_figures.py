"""A rollout's figures: the per-process recorder, quantiles from its latency
buckets, the figures read from summed tallies, the memory and Redis stores,
and the flusher between them."""

from __future__ import annotations

import asyncio
import bisect
import math

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from router.control.figures import (BOUNDS, Flusher, MemoryFigures, Recorder, RedisFigures, key, quantile,
                                    shadow_figures, version_figures)

SLOW = 0.0105  # between BOUNDS[24] (10 ms) and BOUNDS[25]


def test_recorder_counts_only_models_with_a_window():
    recorder = Recorder()
    recorder.attempt("sentiment", 1, True)  # no window yet: not counted
    recorder.latency("sentiment", 1, SLOW)
    recorder.window("sentiment", 7)
    recorder.attempt("sentiment", 1, True)
    recorder.attempt("sentiment", 1, False)
    recorder.latency("sentiment", 1, SLOW)
    recorder.latency("sentiment", 1, SLOW)
    recorder.attempt("sentiment", 2, True)
    recorder.latency("sentiment", 2, 0.2)
    recorder.attempt("digits", 1, True)
    recorder.latency("digits", 1, SLOW)
    assert BOUNDS[24] < SLOW <= BOUNDS[25]
    high = bisect.bisect_left(BOUNDS, 0.2)
    assert recorder.drain() == {("sentiment", 7): {"1:n": 2, "1:e": 1, "1:b25": 2, "2:n": 1, f"2:b{high}": 1}}
    assert recorder.drain() == {}
    recorder.window("sentiment", None)
    recorder.attempt("sentiment", 1, True)
    recorder.latency("sentiment", 1, SLOW)
    assert recorder.drain() == {}


def test_attempts_and_latencies_are_counted_apart():
    """A try is a request's outcome; a latency is one Triton call's (a cached
    answer has none, a shadow or pinned call has one without a try)."""
    recorder = Recorder()
    recorder.window("sentiment", 1)
    recorder.attempt("sentiment", 1, True)  # a cache hit: a request, no timing
    recorder.latency("sentiment", 2, SLOW)  # a Triton call of no routed request
    recorder.latency("sentiment", 2, SLOW)
    assert recorder.drain() == {("sentiment", 1): {"1:n": 1, "2:b25": 2}}


def test_recorder_keeps_windows_apart():
    recorder = Recorder()
    recorder.window("sentiment", 1)
    recorder.attempt("sentiment", 1, True)
    recorder.latency("sentiment", 1, SLOW)
    recorder.window("sentiment", 2)
    recorder.attempt("sentiment", 1, False)
    recorder.latency("sentiment", 1, SLOW)
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


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_shadow_difference_is_not_summed(bad):
    """A NaN in an output must not poison the sums (nor make Redis refuse the flush)."""
    recorder = Recorder()
    recorder.window("sentiment", 3)
    recorder.shadow("sentiment", 2, True, 0.1, 0.99)
    recorder.shadow("sentiment", 2, False, bad, bad)
    recorder.shadow("sentiment", 2, True, 0.3, bad)
    totals = recorder.drain()[("sentiment", 3)]
    assert totals == pytest.approx({"2:sn": 3, "2:sa": 2, "2:sd": 0.4, "2:sc": 0.99, "2:sk": 1})
    figures = shadow_figures(totals, 2)
    assert (figures.compared, figures.agreements, figures.mean_cosine) == (3, 2, 0.99)
    assert math.isfinite(figures.mean_max_abs_diff)


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
    totals = {"1:n": 200, "1:e": 3, "1:b25": 150, "1:b26": 30, "11:n": 5, "11:b50": 5}
    one = version_figures(totals, 1)
    assert (one.version, one.requests, one.errors, one.error_rate, one.timings) == (1, 200, 3, 0.015, 180)
    assert BOUNDS[25] < one.p99_s <= BOUNDS[26], "version 11's buckets are not version 1's"
    assert one.view() == {"version": 1, "requests": 200, "errors": 3, "error_rate": 0.015, "timings": 180,
                          "p99_ms": round(one.p99_s * 1000, 3)}
    assert version_figures(totals, 11).timings == 5
    assert version_figures(totals, 2) == version_figures({}, 2)
    nothing = version_figures(totals, 2)
    assert (nothing.requests, nothing.timings, nothing.p99_s) == (0, 0, None)
    assert nothing.view()["timings"] == 0 and nothing.view()["p99_ms"] is None
    assert version_figures(totals, None).requests == 0


def test_version_figures_of_requests_without_timings_have_no_p99():
    """Every answer cached: requests, but no Triton call to read a p99 from."""
    cached = version_figures({"2:n": 50}, 2)
    assert (cached.requests, cached.timings, cached.p99_s) == (50, 0, None)
    timed_only = version_figures({"2:b25": 3}, 2)  # pinned or shadow calls: timings, no requests
    assert (timed_only.requests, timed_only.timings) == (0, 3) and timed_only.p99_s is not None


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
    """A figures store whose first `failures` adds raise `error`."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("redis is down")
        self.batches: list[dict] = []

    async def add(self, batch):
        if self.failures:
            self.failures -= 1
            raise self.error
        self.batches.append(batch)


def test_flusher_keeps_a_failed_batch_for_the_next_flush():
    recorder, store = Recorder(), FlakyFigures(failures=1)
    recorder.window("sentiment", 1)
    flusher = Flusher(recorder, store, every_s=60)

    async def scenario():
        recorder.attempt("sentiment", 1, False)
        recorder.latency("sentiment", 1, SLOW)
        await flusher.flush()  # fails: kept
        recorder.attempt("sentiment", 1, True)
        recorder.latency("sentiment", 1, SLOW)
        recorder.window("sentiment", 2)
        recorder.attempt("sentiment", 1, True)
        recorder.latency("sentiment", 1, SLOW)
        await flusher.flush()
        await flusher.flush()  # nothing new: no add

    asyncio.run(scenario())
    assert store.batches == [{("sentiment", 1): {"1:n": 2.0, "1:e": 1.0, "1:b25": 2.0},
                              ("sentiment", 2): {"1:n": 1.0, "1:b25": 1.0}}]


def test_flusher_drops_a_batch_that_redis_refused():
    """A command refused inside MULTI/EXEC: the others may have been applied,
    so adding the batch again could count them twice."""
    recorder = Recorder()
    store = FlakyFigures(failures=1, error=ResponseError("ERR value is NaN or Infinity"))
    recorder.window("sentiment", 1)
    flusher = Flusher(recorder, store, every_s=60)

    async def scenario():
        recorder.attempt("sentiment", 1, False)
        await flusher.flush()  # refused: dropped
        recorder.attempt("sentiment", 1, True)
        await flusher.flush()

    asyncio.run(scenario())
    assert store.batches == [{("sentiment", 1): {"1:n": 1.0}}]


def test_flusher_stop_flushes_what_is_left():
    recorder, store = Recorder(), FlakyFigures(failures=0)
    recorder.window("sentiment", 1)

    async def scenario():
        flusher = Flusher(recorder, store, every_s=60)
        flusher.start()
        recorder.attempt("sentiment", 2, True)
        recorder.latency("sentiment", 2, SLOW)
        await flusher.stop()

    asyncio.run(scenario())
    assert store.batches == [{("sentiment", 1): {"2:n": 1.0, "2:b25": 1.0}}]


def test_a_flush_redis_refused_in_part_is_not_added_again(jobs_redis, db):
    """A command that fails inside EXEC leaves the batch's others applied: the
    batch is dropped, not added a second time on the next flush."""
    db.hset(key("sentiment", 1), "1:n", "not a number")  # HINCRBY on it fails inside the transaction
    recorder = Recorder()
    recorder.window("sentiment", 1)

    async def scenario(figures):
        flusher = Flusher(recorder, figures, every_s=60)
        recorder.attempt("sentiment", 1, True)
        recorder.latency("sentiment", 1, SLOW)
        await flusher.flush()  # refused: dropped
        await flusher.flush()  # nothing new: no add

    run_redis(jobs_redis.url, scenario)
    assert db.hget(key("sentiment", 1), "1:b25") == b"1", "applied once by the refused EXEC, never again"
    assert db.hget(key("sentiment", 1), "1:n") == b"not a number"


def test_a_nan_shadow_comparison_reaches_redis_as_no_difference(jobs_redis, db):
    recorder = Recorder()
    recorder.window("sentiment", 1)

    async def scenario(figures):
        recorder.shadow("sentiment", 2, False, float("nan"), float("nan"))
        recorder.shadow("sentiment", 2, True, 0.5, 0.75)
        await Flusher(recorder, figures, every_s=60).flush()
        return await figures.read("sentiment", [1])

    assert run_redis(jobs_redis.url, scenario) == {"2:sn": 2.0, "2:sa": 1.0, "2:sd": 0.5, "2:sc": 0.75, "2:sk": 1.0}
