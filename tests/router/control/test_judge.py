"""judge(): each gate of a step, on figures made by hand."""

from __future__ import annotations

import pytest

from router.control.controller import Judgement, judge
from router.control.figures import ShadowFigures, VersionFigures
from router.control.state import Policy

POLICY = Policy(min_requests=100, max_error_rate=0.01, max_p99_ratio=1.5)
FLOOR = 0.005
FAST = VersionFigures(1, 1000, 0, 0.010, timings=1000)  # the default: 10 ms p99


def canary(requests, errors=0, p99_s=0.010, timings=None):
    """The canary's figures; by default one Triton timing per request (no cache hits)."""
    timings = requests if timings is None else timings
    return VersionFigures(2, requests, errors, p99_s if timings else None, timings)


def shadow(requests, agreements, errors=0):
    return ShadowFigures(2, requests, errors, agreements, None, None)


def verdict(figures, *, policy=POLICY, percent=10.0, baseline=FAST, compared=None, over=False, floor=FLOOR):
    return judge(policy, percent, figures, baseline, compared, over, floor)


def test_errors_breach_as_soon_as_certain():
    breach = verdict(canary(10, errors=2))
    assert breach == Judgement("breach", "error_rate", "canary error rate 20.00% (2 of 10) over 1.00%")
    assert verdict(canary(10, errors=1)).result == "pending", "1 error could still be 1% of 100"
    assert verdict(canary(200, errors=1)).result == "pending"
    assert verdict(canary(200, errors=1), over=True).result == "pass"
    assert verdict(canary(200, errors=3), over=True).gate == "error_rate"


def test_latency_breaches_once_both_versions_have_100_timings():
    slow = canary(100, p99_s=0.100, timings=99)
    assert verdict(slow).result == "pending", "99 timings: not yet"
    assert verdict(slow, over=True) == Judgement(
        "hold", None, "99 canary and 1000 default Triton timings of the 100 each that a p99 needs"), \
        "at the end too: never a p99 of 99 timings"
    breach = verdict(canary(100, p99_s=0.100))
    assert (breach.result, breach.gate) == ("breach", "latency")
    assert breach.reason == "canary p99 100.0 ms over 15.0 ms (1.5 x the default's 10.0 ms)"
    assert verdict(canary(100, p99_s=0.0149), over=True).result == "pass"
    assert verdict(canary(100, p99_s=0.0151), over=True).gate == "latency"


def test_the_floor_keeps_sub_millisecond_noise_from_breaching():
    quick = VersionFigures(1, 1000, 0, 0.0003, timings=1000)
    assert verdict(canary(1000, p99_s=0.0008), baseline=quick, over=True).result == "pass"
    assert verdict(canary(1000, p99_s=0.0008), baseline=quick, floor=0.0).gate == "latency"
    assert verdict(canary(1000, p99_s=0.006), baseline=quick).gate == "latency"


def test_an_error_rate_exactly_at_the_maximum_is_no_breach():
    """0.29 x 100 is 28.999999999999996 in floating point: 29 errors are 29%, not over it."""
    policy = Policy(min_requests=100, max_error_rate=0.29)
    assert verdict(canary(100, errors=29), policy=policy, over=True).result == "pass"
    assert verdict(canary(100, errors=30), policy=policy).gate == "error_rate"
    assert verdict(canary(10, errors=29), policy=policy).result == "pending", "29 of 100 still possible"
    assert verdict(canary(10, errors=30), policy=policy).gate == "error_rate"


def test_agreement_breaches_on_enough_comparisons():
    policy = Policy(min_requests=100, min_agreement=0.95)
    assert verdict(canary(10), policy=policy, compared=shadow(99, 50)).result == "pending"
    breach = verdict(canary(10), policy=policy, compared=shadow(110, 90, errors=10))
    assert breach == Judgement("breach", "agreement", "shadow agreement 90.00% under 95.00% over 100 comparisons")
    assert verdict(canary(10), policy=policy, compared=shadow(100, 95)).result == "pending"
    assert verdict(canary(10), policy=POLICY, compared=shadow(100, 0)).result == "pending", "no minimum set"


def test_too_few_requests_hold_at_the_interval_end():
    assert verdict(canary(99)).result == "pending"
    assert verdict(canary(99), over=True) == Judgement("hold", None, "99 of 100 canary requests")


def test_pass_at_the_interval_end_within_every_gate():
    assert verdict(canary(100), over=False).result == "pending"
    assert verdict(canary(100), over=True) == Judgement("pass", None, "100 canary requests within every gate")


@pytest.mark.parametrize("percent,compared,result", [
    (10.0, None, "hold"),
    (10.0, shadow(99, 99), "hold"),
    (10.0, shadow(100, 100), "pass"),
    (100.0, None, "pass"),  # at 100% the canary serves everything: nothing is left to compare
])
def test_min_agreement_needs_comparisons_below_100_percent(percent, compared, result):
    policy = Policy(min_requests=100, min_agreement=0.9)
    judged = verdict(canary(500), policy=policy, percent=percent, compared=compared, over=True)
    assert judged.result == result
    if result == "hold":
        assert judged.reason == f"{0 if compared is None else compared.compared} of 100 shadow comparisons"


def test_fewer_than_100_timings_hold_at_the_interval_end_then_100_breach():
    policy = Policy(min_requests=10, max_p99_ratio=1.5)
    slow = canary(50, p99_s=0.100)
    assert verdict(slow, policy=policy).result == "pending", "50 timings: a p99 is little more than their max"
    assert verdict(slow, policy=policy, over=True) == Judgement(
        "hold", None, "50 canary and 1000 default Triton timings of the 100 each that a p99 needs")
    assert verdict(canary(100, p99_s=0.100), policy=policy, over=True).gate == "latency", "held, then 100 came"
    assert verdict(canary(100, p99_s=0.100), policy=policy).gate == "latency", "at any time"
    few = VersionFigures(1, 5, 0, 0.010, timings=5)
    assert verdict(canary(100, p99_s=0.100), policy=policy, baseline=few).result == "pending", \
        "5 default timings: not read"
    assert verdict(canary(100, p99_s=0.100), policy=policy, baseline=few, over=True) == Judgement(
        "hold", None, "100 canary and 5 default Triton timings of the 100 each that a p99 needs")


def test_timings_not_requests_decide_when_a_p99_is_read():
    """Cached answers are requests without a Triton timing: they neither count
    towards the 100 timings nor stand in for them."""
    policy = Policy(min_requests=10, max_p99_ratio=1.5)
    assert verdict(canary(1000, p99_s=0.100, timings=99), policy=policy).result == "pending"
    assert verdict(canary(1000, p99_s=0.100, timings=100), policy=policy).gate == "latency"
    assert verdict(canary(20, p99_s=0.100, timings=100), policy=policy).gate == "latency", \
        "pinned and shadow calls are timings too"
    cached_default = VersionFigures(1, 1000, 0, 0.010, timings=99)
    assert verdict(canary(1000, p99_s=0.100), policy=policy, baseline=cached_default).result == "pending"


def test_a_canary_whose_every_answer_was_cached_passes_with_no_latency_to_judge():
    cached = canary(500, p99_s=None, timings=0)
    assert verdict(cached).result == "pending"
    passed = Judgement("pass", None, "500 canary requests within every gate "
                                     "(every canary answer came from the cache: no latency to judge)")
    assert verdict(cached, over=True) == passed
    assert verdict(cached, baseline=VersionFigures(1, 0, 0, None), over=True) == passed, "no default timings either"
    assert verdict(canary(500, errors=6, p99_s=None, timings=0), over=True).gate == "error_rate"
    policy = Policy(min_requests=100, min_agreement=0.9)
    assert verdict(cached, policy=policy, over=True) == Judgement("hold", None, "0 of 100 shadow comparisons")


def test_a_default_without_100_timings_holds_at_the_interval_end():
    nothing = VersionFigures(1, 0, 0, None)
    assert verdict(canary(500, p99_s=0.100), baseline=nothing).result == "pending"
    assert verdict(canary(500, p99_s=0.100), baseline=nothing, over=True) == Judgement(
        "hold", None, "500 canary and 0 default Triton timings of the 100 each that a p99 needs")
    cached = VersionFigures(1, 1000, 0, None, timings=0)
    assert verdict(canary(500), baseline=cached, over=True).result == "hold", "requests are not timings"


def test_the_gates_before_latency_still_breach_without_timings():
    nothing = VersionFigures(1, 0, 0, None)
    assert verdict(canary(10, errors=5, p99_s=None, timings=0), baseline=nothing).gate == "error_rate"
    policy = Policy(min_requests=100, min_agreement=0.95)
    assert verdict(canary(10, p99_s=None, timings=0), policy=policy, baseline=nothing,
                   compared=shadow(100, 50)).gate == "agreement"
    assert verdict(canary(99, p99_s=None, timings=0), over=True) == Judgement(
        "hold", None, "99 of 100 canary requests"), "too few requests is said first"
