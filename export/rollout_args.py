"""The arguments of `promote`, `rollback` and `status`, checked as argparse
types before anything is contacted: the router's own limits on a start
(router/control/state.py: Policy), so that nothing is loaded into Triton for a
rollout the router would refuse, and no NaN or infinity is ever sent."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

MAX_STEPS, MIN_INTERVAL_S, MAX_INTERVAL_S, MAX_REQUESTS, MAX_P99_RATIO = 20, 0.1, 86_400.0, 10_000_000, 1000.0


@dataclass(frozen=True)
class PromoteArgs:
    repository: Path
    model: str
    version: int
    steps: tuple[float, ...] | None = None
    interval: float | None = None
    min_requests: int | None = None
    max_error_rate: float | None = None
    max_p99_ratio: float | None = None
    min_agreement: float | None = None
    shadow: float | None = None
    router: str | None = None
    triton: str | None = None
    no_wait: bool = False


@dataclass(frozen=True)
class RollbackArgs:
    model: str
    router: str | None = None
    reason: str | None = None  # the router's own when left out


@dataclass(frozen=True)
class StatusArgs:
    model: str | None = None
    router: str | None = None
    as_json: bool = False


Args = PromoteArgs | RollbackArgs | StatusArgs


# -- argument types ---------------------------------------------------------------------------------------------


def version_arg(text: str) -> int:
    digits = text[1:] if text[:1] in ("v", "V") else text
    if not (digits.isascii() and digits.isdigit() and int(digits) >= 1):
        raise argparse.ArgumentTypeError(f"a version looks like 3 or v3, got {text!r}")
    return int(digits)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan  # refused by every range below, as nan and inf are


def steps_arg(text: str) -> tuple[float, ...]:
    steps = tuple(_number(part) for part in text.split(","))
    if not all(0 < s <= 100 for s in steps):
        raise argparse.ArgumentTypeError(f"steps are percents above 0 and at most 100, like 5,25,50,100; got {text!r}")
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise argparse.ArgumentTypeError(f"steps must rise, like 5,25,50,100; got {text!r}")
    if len(steps) > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_STEPS} steps, got {len(steps)}")
    return steps


def interval_arg(text: str) -> float:
    value = _number(text)
    if not MIN_INTERVAL_S <= value <= MAX_INTERVAL_S:
        raise argparse.ArgumentTypeError(f"a number of seconds from {MIN_INTERVAL_S:g} to {MAX_INTERVAL_S:g}, "
                                         f"got {text!r}")
    return value


def requests_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_REQUESTS:
        raise argparse.ArgumentTypeError(f"a whole number of requests from 1 to {MAX_REQUESTS}, got {text!r}")
    return value


def p99_ratio_arg(text: str) -> float:
    value = _number(text)
    if not 1 <= value <= MAX_P99_RATIO:
        raise argparse.ArgumentTypeError(f"a ratio from 1 to {MAX_P99_RATIO:g} (1.5: the canary's p99 may be "
                                         f"1.5 x the default's), got {text!r}")
    return value


def fraction_arg(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a fraction between 0 and 1 (0.01 is 1%), got {text!r}")
    return value


def seconds_arg(text: str) -> float:
    value = _number(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, got {text!r}")
    return value
