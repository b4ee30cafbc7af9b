"""judge(): each gate of a step, on figures made by hand."""

from __future__ import annotations

import pytest

from router.control.controller import Judgement, judge
from router.control.figures import ShadowFigures, VersionFigures
from router.control.state import Policy

POLICY = Policy(min_requests=100, max_error_rate=0.01, max_p99_ratio=1.5)
FLOOR = 0.005
FAST = VersionFigures(1, 1000, 0, 0.010)  # the default: 10 ms p99


def canary(requests, errors=0, p99_s=0.010):
    return VersionFigures(2, requests, errors, p99_s)


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


def test_latency_breaches_only_on_enough_requests():
    slow = canary(99, p99_s=0.100)
    assert verdict(slow).result == "pending"
    assert verdict(slow, over=True).result == "hold"
    breach = verdict(canary(100, p99_s=0.100))
    assert (breach.result, breach.gate) == ("breach", "latency")
    assert breach.reason == "canary p99 100.0 ms over 15.0 ms (1.5 x the default's 10.0 ms)"
    assert verdict(canary(100, p99_s=0.0149), over=True).result == "pass"
    assert verdict(canary(100, p99_s=0.100), baseline=VersionFigures(1, 0, 0, None), over=True).result == "pass"


def test_the_floor_keeps_sub_millisecond_noise_from_breaching():
    quick = VersionFigures(1, 1000, 0, 0.0003)
    assert verdict(canary(1000, p99_s=0.0008), baseline=quick, over=True).result == "pass"
    assert verdict(canary(1000, p99_s=0.0008), baseline=quick, floor=0.0).gate == "latency"
    assert verdict(canary(1000, p99_s=0.006), baseline=quick).gate == "latency"


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


def test_a_p99_needs_enough_timings_before_the_interval_end():
    policy = Policy(min_requests=10, max_p99_ratio=1.5)
    slow = canary(50, p99_s=0.100)
    assert verdict(slow, policy=policy).result == "pending", "50 timings: a p99 is little more than their max"
    assert verdict(canary(100, p99_s=0.100), policy=policy).gate == "latency"
    assert verdict(slow, policy=policy, over=True).gate == "latency", "at the end, whatever timings there are"
    few = VersionFigures(1, 5, 0, 0.010)
    assert verdict(slow, policy=policy, baseline=few, over=True).result == "pass", "too few default timings"
