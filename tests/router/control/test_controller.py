"""Controller.step on a MemoryStore and MemoryFigures fed through a Recorder,
over a Triton snapshot set by hand: pending, next step, promotion, roll back,
holds then a pause, and two controllers judging the same revision."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from router.control.controller import Controller, LocalLease
from router.control.figures import MemoryFigures, Recorder
from router.control.state import Rollout, Start
from router.control.store import MemoryStore
from router.dataplane.catalog import Snapshot
from router.metrics import Metrics
from router.settings import Settings

T0 = 1_000.0
MODEL = "sentiment"


class Plane:
    """A store with one started rollout, its figures, and controllers over a Triton snapshot."""

    def __init__(self, canary_state="READY", triton_ready=True, floor_ms=5.0, **policy) -> None:
        self.store, self.figures, self.recorder, self.metrics = MemoryStore(), MemoryFigures(), Recorder(), Metrics()
        snapshot = Snapshot(triton_ready=triton_ready, states={MODEL: {1: "READY", 2: canary_state}})
        self.service = SimpleNamespace(catalog=SimpleNamespace(snapshot=snapshot))
        self.settings = Settings(_env_file=None, redis_url=None, jobs_redis_url=None, rollout_max_holds=2,
                                 rollout_p99_floor_ms=floor_ms)
        start = Start(canary_version=2, steps=[10, 100], interval_s=30, min_requests=10, **policy)
        self.state = asyncio.run(self.store.update(MODEL, Rollout(model=MODEL, default_version=1),
                                                   lambda s: s.start(start, "ops", now=T0)))

    def controller(self) -> Controller:
        return Controller(self.store, self.figures, LocalLease(), self.service, self.settings, self.metrics)

    def traffic(self, version, n, seconds=0.01, errors=0, timed=True):
        """`n` routed requests of `version`, the first `errors` failed; each a
        Triton call of `seconds` when `timed`, else a cached answer."""
        self.recorder.window(MODEL, self.state.window)
        for i in range(n):
            self.recorder.attempt(MODEL, version, i >= errors)
            if timed and i >= errors:
                self.recorder.latency(MODEL, version, seconds)
        asyncio.run(self.figures.add(self.recorder.drain()))

    def calls(self, version, n, seconds=0.01):
        """`n` Triton calls of `version` that are no routed request (pinned, or a shadow's)."""
        self.recorder.window(MODEL, self.state.window)
        for _ in range(n):
            self.recorder.latency(MODEL, version, seconds)
        asyncio.run(self.figures.add(self.recorder.drain()))

    def step(self, now, controller=None, state=None):
        result = asyncio.run((controller or self.controller()).step(state or self.state, now))
        if result is not None:
            self.state = result
        return result

    def stored(self) -> Rollout:
        return asyncio.run(self.store.get(MODEL))

    def verdict(self) -> dict:
        return asyncio.run(self.store.verdict(MODEL))

    def sample(self, name, **labels):
        return self.metrics.registry.get_sample_value(name, labels)


def test_pending_before_the_deadline_then_the_next_step_then_promotion():
    plane = Plane()
    plane.traffic(2, 100)
    plane.traffic(1, 900)
    assert plane.step(T0 + 29) is None
    assert plane.stored().revision == 1
    verdict = plane.verdict()
    assert (verdict["result"], verdict["step"], verdict["percent"], verdict["ends_in_s"]) == ("pending", 0, 10.0, 1.0)
    assert (verdict["canary"]["requests"], verdict["default"]["requests"]) == (100, 900)
    assert (verdict["canary"]["timings"], verdict["default"]["timings"]) == (100, 900)

    moved = plane.step(T0 + 30)
    assert (moved.step, moved.canary_percent, moved.revision, moved.windows) == (1, 100.0, 2, [1, 2])
    assert moved.analysis.verdict["result"] == "pass" and plane.stored() == moved
    assert moved.analysis.verdict["reason"] == "100 canary requests within every gate"

    plane.traffic(2, 100)
    promoted = plane.step(T0 + 60)
    assert (promoted.status, promoted.default_version, promoted.canary_version) == ("promoted", 2, None)
    assert plane.sample("rollout_promotions_total", model=MODEL) == 1.0


def test_an_error_breach_rolls_back_at_once():
    plane = Plane()
    plane.traffic(2, 5, errors=2)
    back = plane.step(T0 + 1)
    assert (back.status, back.canary_percent, back.revision) == ("rolled_back", 0.0, 2)
    assert back.reason == "error_rate: canary error rate 40.00% (2 of 5) over 1.00%"
    assert back.analysis.verdict["gate"] == "error_rate"
    assert plane.sample("rollout_rollbacks_total", model=MODEL, reason="error_rate") == 1.0


def test_a_stale_revision_changes_nothing():
    plane = Plane()
    plane.traffic(2, 5, errors=2)
    judged = plane.state
    first, second = plane.controller(), plane.controller()
    assert plane.step(T0 + 1, first, judged).revision == 2
    assert asyncio.run(second.step(judged, T0 + 1)) is None
    assert plane.stored().revision == 2 and len(plane.stored().history) == 2
    assert plane.sample("rollout_rollbacks_total", model=MODEL, reason="error_rate") == 1.0


def test_a_canary_not_ready_is_a_breach_while_triton_is_up():
    plane = Plane(canary_state="UNAVAILABLE")
    back = plane.step(T0 + 1)
    assert back.status == "rolled_back"
    assert back.reason == "unavailable: canary v2 is not READY in Triton"
    assert plane.sample("rollout_rollbacks_total", model=MODEL, reason="unavailable") == 1.0

    down = Plane(canary_state="UNAVAILABLE", triton_ready=False)
    assert down.step(T0 + 1) is None, "Triton itself unreachable: not the canary's fault"


def test_no_traffic_holds_then_pauses():
    plane = Plane()
    held = plane.step(T0 + 30)
    assert (held.status, held.holds, held.step_deadline, held.window) == ("progressing", 1, T0 + 60, 1)
    assert plane.step(T0 + 59) is None
    paused = plane.step(T0 + 60)
    assert (paused.status, paused.holds, paused.step_deadline) == ("paused", 2, None)
    assert paused.reason == "paused at 10% after 2 held intervals: 0 of 10 canary requests"
    assert plane.sample("rollout_rollbacks_total", model=MODEL, reason="error_rate") is None


def test_latency_against_the_floor_in_milliseconds():
    plane = Plane()
    plane.traffic(1, 100, seconds=0.0003)
    plane.traffic(2, 100, seconds=0.0008)
    assert plane.step(T0 + 1) is None, "0.8 ms against 0.3 ms is under the 5 ms floor"
    assert plane.step(T0 + 30).step == 1

    strict = Plane(floor_ms=0.0)
    strict.traffic(1, 100, seconds=0.0003)
    strict.traffic(2, 100, seconds=0.0008)
    assert strict.step(T0 + 1).reason.startswith("latency: canary p99 0.8 ms over 0.5 ms")


def test_the_default_of_earlier_steps_is_the_baseline_when_this_step_has_too_few():
    plane = Plane()
    plane.traffic(1, 100, seconds=0.01)
    plane.traffic(2, 100, seconds=0.01)
    assert plane.step(T0 + 30).canary_percent == 100.0
    plane.traffic(2, 100, seconds=0.1)  # the new window: at 100% the default takes no traffic
    back = plane.step(T0 + 31)
    assert back.status == "rolled_back" and back.analysis.verdict["gate"] == "latency"
    assert back.analysis.verdict["baseline"]["requests"] == 100 and back.analysis.verdict["default"]["requests"] == 0
    assert (back.analysis.verdict["baseline"]["timings"], back.analysis.verdict["default"]["timings"]) == (100, 0)


def test_the_default_of_this_step_is_the_baseline_when_it_has_enough():
    plane = Plane()
    plane.traffic(1, 100, seconds=0.2)  # the first step's default was slow (a load spike)
    plane.traffic(2, 100, seconds=0.2)
    assert plane.step(T0 + 30).step == 1
    plane.traffic(1, 100, seconds=0.01)
    plane.traffic(2, 100, seconds=0.05)
    back = plane.step(T0 + 31)
    assert back is not None and back.analysis.verdict["gate"] == "latency", "5x this step's default"
    assert back.analysis.verdict["baseline"] == back.analysis.verdict["default"]


def test_this_steps_default_needs_100_timings_not_requests_to_be_the_baseline():
    plane = Plane()
    plane.traffic(1, 100, seconds=0.2)  # the first step's default was slow
    plane.traffic(2, 100, seconds=0.2)
    assert plane.step(T0 + 30).step == 1
    plane.traffic(1, 50, seconds=0.01)
    plane.traffic(1, 50, timed=False)  # 100 requests, half of them cached: 50 timings
    plane.traffic(2, 100, seconds=0.05)
    assert plane.step(T0 + 31) is None, "against the whole rollout's default (p99 about 200 ms): no breach"
    verdict = plane.verdict()
    assert (verdict["result"], verdict["default"]["requests"], verdict["default"]["timings"]) == ("pending", 100, 50)
    assert (verdict["baseline"]["requests"], verdict["baseline"]["timings"]) == (200, 150)
    plane.calls(1, 50, seconds=0.01)  # this step's default reaches 100 timings: 5x its 10 ms
    assert plane.step(T0 + 32).analysis.verdict["gate"] == "latency"


def test_a_canary_whose_answers_were_all_cached_passes_with_no_latency_to_judge():
    plane = Plane()
    plane.traffic(1, 100)
    plane.traffic(2, 20, timed=False)
    assert plane.step(T0 + 29) is None
    moved = plane.step(T0 + 30)
    assert (moved.status, moved.step, moved.holds) == ("progressing", 1, 0)
    reason = "20 canary requests within every gate (every canary answer came from the cache: no latency to judge)"
    assert moved.analysis.verdict["reason"] == reason and moved.history[-1]["reason"] == reason
    assert moved.analysis.verdict["canary"]["timings"] == 0 and moved.analysis.verdict["canary"]["p99_ms"] is None
    plane.traffic(2, 10, timed=False)
    assert plane.step(T0 + 60).status == "promoted"
    assert plane.sample("rollout_promotions_total", model=MODEL) == 1.0


def test_a_default_without_timings_in_the_whole_rollout_holds_then_pauses():
    plane = Plane()
    plane.traffic(1, 100, timed=False)
    plane.traffic(2, 100)
    assert plane.step(T0 + 1) is None, "100 canary timings, none of the default's: no p99 to compare"
    held = plane.step(T0 + 30)
    assert (held.status, held.step, held.holds) == ("progressing", 0, 1), "never passed unjudged"
    reason = "100 canary and 0 default Triton timings of the 100 each that a p99 needs"
    assert held.analysis.verdict["reason"] == reason and held.history[-1]["reason"] == reason
    paused = plane.step(T0 + 60)
    assert (paused.status, paused.holds) == ("paused", 2)
    assert paused.reason == f"paused at 10% after 2 held intervals: {reason}"
    assert plane.sample("rollout_promotions_total", model=MODEL) is None


def test_too_few_timings_hold_at_the_interval_end_then_100_breach():
    plane = Plane()
    plane.traffic(1, 100, seconds=0.01)
    plane.traffic(2, 20, seconds=0.1)
    assert plane.step(T0 + 1) is None, "20 timings are too few for a p99"
    held = plane.step(T0 + 30)
    assert (held.status, held.step, held.holds, held.window) == ("progressing", 0, 1, 1)
    reason = "20 canary and 100 default Triton timings of the 100 each that a p99 needs"
    assert held.analysis.verdict["reason"] == reason
    plane.traffic(2, 80, seconds=0.1)
    back = plane.step(T0 + 31)
    assert back is not None and back.status == "rolled_back", "100 timings: judged before the interval ends"
    assert back.reason.startswith("latency: canary p99 99.8 ms over")


def test_one_cold_start_among_100_timings_is_no_breach():
    """A p99 of 100 timings is interpolated at rank 99: one slow call is the
    1% it leaves out; two are not."""
    plane = Plane()
    plane.traffic(1, 100, seconds=0.01)
    plane.traffic(2, 1, seconds=5.0)  # the first call loads the model
    plane.traffic(2, 99, seconds=0.01)
    assert plane.step(T0 + 1) is None
    assert plane.verdict()["canary"]["p99_ms"] < 15.0
    assert plane.step(T0 + 30).step == 1

    twice = Plane()
    twice.traffic(1, 100, seconds=0.01)
    twice.traffic(2, 2, seconds=5.0)
    twice.traffic(2, 98, seconds=0.01)
    assert twice.step(T0 + 1).analysis.verdict["gate"] == "latency"


def test_calls_of_no_routed_request_are_timings_but_not_requests():
    """Pinned requests and shadow calls give the p99 its samples, never the
    error rate or the request count a step needs."""
    plane = Plane()
    plane.traffic(1, 100, seconds=0.01)
    plane.traffic(2, 5, timed=False)
    plane.calls(2, 100, seconds=0.1)
    back = plane.step(T0 + 1)
    assert back is not None and back.status == "rolled_back", "100 timings each: judged before the end"
    assert back.analysis.verdict["gate"] == "latency" and back.reason.startswith("latency: canary p99 99.8 ms over")
    canary = back.analysis.verdict["canary"]
    assert (canary["requests"], canary["errors"], canary["timings"]) == (5, 0, 100)
