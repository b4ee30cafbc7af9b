"""`promote`, `rollback` and `status`: a version on disk into service, through the router.

`promote` checks the version on disk and the options, pins the router's default
when none is set (else the router would serve the new version as soon as Triton
loads it), has Triton load it, optionally shadows it, then starts the router's
automated rollout and follows it until the router promotes it (exit 0), rolls it
back (3) or pauses it (4). The router decides every step; this only asks and reports.
Nothing here imports torch; httpx is imported when a call is made.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote

from export.errors import ExportError
from export.rollout_args import PromoteArgs, RollbackArgs, StatusArgs
from export.remote import Api, Unreachable, rollout_path, router_api, triton_api
from export.rollout_view import (as_dict, fmt, is_number, live_line, shadow_figures, shadow_line, state_line,
                                 status_table, step_label, verdict_of, version_label)

LOAD_TIMEOUT_S = 120.0  # Triton's load call, and the wait until the version is READY
ROUTER_SEES_S = 30.0  # until the router's readiness refresh sees the version
POLL_S = 1.0
SHADOW_LINE_S = 2.0
UNREACHABLE_GRACE_S = 30.0  # while following: a router restart is waited out this long
HEARTBEAT_S = 10.0  # while following: the figures again this often when they changed, without a new verdict

Out = Callable[[str], None]


class Interrupted(ExportError):
    exit_code = 130


def _where(state: dict) -> str:
    """`at step 2/4 (25%)`: where the last verdict was made, else where the state is."""
    verdict, steps = verdict_of(state), state.get("steps") or []
    step = verdict.get("step", state.get("step"))
    return (f"at step {step_label({'step': step, 'steps': steps})} "
            f"({fmt(verdict.get('percent', state.get('canary_percent')), 'g', '%')})")


def outcome(state: dict, version: int) -> tuple[int, str] | None:
    """The exit code and last line once the rollout of `version` has ended; None while it goes on."""
    status, model, reason = state.get("status"), state.get("model", "-"), state.get("reason") or "no reason given"
    revision = state.get("revision", "-")
    if status == "promoted":
        return 0, f"promoted: {model} v{version} is the default (revision {revision})"
    if status == "rolled_back":
        return 3, (f"rolled back: {model} v{version} {_where(state)}: {reason}; "
                   f"the default stays {version_label(state.get('default_version'))}")
    if status == "paused":
        return 4, (f"paused: {model} v{version} {_where(state)}: {reason.removeprefix('paused: ')}; it stays paused "
                   f"(`python -m export rollback {model}` ends it)")
    if status != "progressing":
        raise ExportError(f"the rollout of {model} v{version} stopped: status {status!r} at revision {revision}; "
                          "someone else changed it")
    if state.get("canary_version") != version:
        raise ExportError(f"the rollout of {model} now has canary {version_label(state.get('canary_version'))}, "
                          f"not v{version}: someone else changed it (revision {revision})")
    return None


def shadow_refusal(figures: dict, min_agreement: float | None) -> str | None:
    """Why the measured agreement does not allow a start, if it does not."""
    if min_agreement is None:
        return None
    agreement, wanted = figures.get("agreement"), fmt(min_agreement, "g", "%", 100)
    if not is_number(agreement):
        return (f"no shadow agreement was measured ({fmt(figures.get('requests'), '.0f')} requests); "
                f"--min-agreement {wanted} needs one")
    if agreement < min_agreement:
        return f"shadow agreement {fmt(agreement, '.1f', '%', 100)} is below --min-agreement {wanted}"
    return None


def start_body(args: PromoteArgs) -> dict:
    """POST .../start: the version and only the options given; the router has the defaults."""
    body: dict[str, Any] = {"canary_version": args.version}
    if args.steps is not None:
        body["steps"] = [int(s) if s.is_integer() else s for s in args.steps]
    options = {"interval_s": args.interval, "min_requests": args.min_requests, "max_error_rate": args.max_error_rate,
               "max_p99_ratio": args.max_p99_ratio, "min_agreement": args.min_agreement}
    body.update((key, value) for key, value in options.items() if value is not None)
    return body


# -- the commands -----------------------------------------------------------------------------------------------


def check_on_disk(repository: Path, model: str, version: int) -> None:
    """The version folder exists, the model validates, and Triton's version policy would load it."""
    from export.config import VersionPolicy, read_config
    from export.repository import numeric_versions
    from export.validate import check_model

    model_dir = repository / model
    versions = numeric_versions(model_dir)
    if version not in versions:
        have = ", ".join(f"v{v}" for v in versions) or "none"
        raise ExportError(f"{model} v{version} is not in {repository} (versions there: {have})")
    problems = check_model(model_dir)
    if problems:
        more = f" (and {len(problems) - 1} more; see `python -m export validate`)" if len(problems) > 1 else ""
        raise ExportError(f"{model} does not validate: {problems[0]}{more}")
    policy = VersionPolicy.of(read_config(model_dir))
    if (policy.kind == "latest" and version not in versions[-policy.values[0]:]
            or policy.kind == "specific" and version not in policy.values):
        raise ExportError(f"{model} v{version} is outside the version policy {policy} of {model}/config.pbtxt, "
                          "so Triton would not load it (rebuild with --version-policy)")


def ensure_ready(triton: Api, model: str, version: int, out: Out, sleep=time.sleep, clock=time.monotonic) -> None:
    """Triton serves the version: loaded through the repository API unless it already was."""
    ready = f"/v2/models/{quote(model, safe='')}/versions/{version}/ready"
    if triton.send("GET", ready).status_code == 200:
        out(f"triton: {model} v{version} is READY")
        return
    out(f"triton: loading {model} (v{version} is not READY)")
    began = clock()
    triton.call("POST", f"/v2/repository/models/{quote(model, safe='')}/load", timeout=LOAD_TIMEOUT_S)
    while triton.send("GET", ready).status_code != 200:
        if clock() - began >= LOAD_TIMEOUT_S:
            raise ExportError(f"triton: {model} v{version} is not READY {LOAD_TIMEOUT_S:g} s after the load; "
                              "see Triton's log")
        sleep(POLL_S)
    out(f"triton: {model} v{version} is READY ({clock() - began:.1f} s)")


def wait_router_sees(router: Api, model: str, version: int, sleep=time.sleep, clock=time.monotonic) -> None:
    """The router checks a version against its own view of Triton, refreshed every TRITON_REFRESH_S."""
    began = clock()
    while True:
        models = as_dict(as_dict(router.call("GET", "/models")).get("models"))
        seen = as_dict(as_dict(models.get(model)).get("versions")).get(str(version))
        if seen == "READY":
            return
        if clock() - began >= ROUTER_SEES_S:
            raise ExportError(f"router: does not see {model} v{version} READY after {ROUTER_SEES_S:g} s "
                              f"(it says {seen or 'nothing'}), although Triton does")
        sleep(POLL_S)


def run_shadow(router: Api, args: PromoteArgs, out: Out, sleep=time.sleep, clock=time.monotonic) -> dict:
    """Mirror all traffic to the version for `args.shadow` seconds; the last shadow figures."""
    path, figures = rollout_path(args.model), {}
    router.call("PUT", path, {"shadow_version": args.version, "shadow_percent": 100,
                              "reason": "export promote: shadow"})
    out(f"shadow: v{args.version} gets a copy of every request for {args.shadow:g} s")
    end = clock() + args.shadow
    try:
        while (left := end - clock()) > 0:
            sleep(min(SHADOW_LINE_S, left))
            latest = shadow_figures(router.call("GET", path))
            figures = latest if latest.get("version") in (None, args.version) else figures
            out(shadow_line(figures, args.version))
    finally:
        router.call("PUT", path, {"shadow_percent": 0, "reason": "export promote: shadow done"})
    return figures


def _judged(state: dict) -> tuple:
    """What a new line is printed for: the status, the step, or the judgement of the step."""
    verdict = verdict_of(state)
    return state.get("status"), state.get("step"), verdict.get("result"), verdict.get("gate"), verdict.get("reason")


def waiting_line(exc: Unreachable) -> str:
    """What following waits for when the router does not answer, or answers a 500/502/503/504."""
    what = ("the router to come back" if exc.status is None
            else "the router to answer again (it may be restarting, or its Redis unreachable)")
    return f"{exc}; waiting up to {UNREACHABLE_GRACE_S:g} s for {what}"


def follow(get_state: Callable[[], dict], version: int, out: Out, sleep=time.sleep, clock=time.monotonic,
           state: dict | None = None) -> int:
    """A line whenever the step, status or verdict changes (and the figures every HEARTBEAT_S),
    until the rollout of `version` ends; its exit code."""
    shown, line, printed_at, down_since = None, None, -math.inf, None
    while True:
        if state is None:
            try:
                state = get_state()
            except Unreachable as exc:
                if down_since is None:
                    down_since = clock()
                    out(waiting_line(exc))
                elif clock() - down_since >= UNREACHABLE_GRACE_S:
                    raise Unreachable(f"{exc}, still after {UNREACHABLE_GRACE_S:g} s", exc.status) from None
                sleep(POLL_S)
                continue
            down_since = None
        now, previous = clock(), line
        line = live_line(state)
        if _judged(state) != shown or (line != previous and now - printed_at >= HEARTBEAT_S):
            out(line)
            shown, printed_at = _judged(state), now
        ended = outcome(state, version)
        if ended is not None:
            out(ended[1])
            return ended[0]
        sleep(POLL_S)
        state = None


def serving_version(models: Any, model: str, promoted: int) -> int | None:
    """The version the router serves when no default is set: the highest READY one in its
    GET /models answer (`models[model].versions`, version -> state), the promoted one aside."""
    versions = as_dict(as_dict(as_dict(as_dict(models).get("models")).get(model)).get("versions"))
    ready = [int(v) for v, s in versions.items() if s == "READY" and v.isascii() and v.isdigit()]
    return max((v for v in ready if v != promoted), default=None)


def before_loading(router: Api, model: str, version: int, out: Out) -> None:
    """Refuses what the start would refuse, and pins the default: with none set the router serves
    the highest READY version, so loading `version` would serve it before any analysis."""
    path = rollout_path(model)
    state = as_dict(router.call("GET", path))
    if state.get("status") in ("progressing", "paused"):
        raise ExportError(f"a rollout of {model} is already {state['status']} (canary "
                          f"{version_label(state.get('canary_version'))}): it must end before another starts")
    if state.get("default_version") == version:
        raise ExportError(f"v{version} is already the default of {model}: there is nothing to roll out")
    if state.get("default_version") is not None:
        return
    serving = serving_version(router.call("GET", "/models"), model, version)
    if serving is None:
        raise ExportError(f"the router has no READY version of {model} but v{version}, so nothing to compare a "
                          f"canary with (to serve v{version} without a rollout, load it in Triton)")
    router.call("PUT", path, {"default_version": serving,
                              "reason": f"export promote: pin the default before loading v{version}"})
    out(f"router: {model} had no default (the highest READY version serves); "
        f"pinned v{serving} before loading v{version}")


def promote(args: PromoteArgs, out: Out = print, sleep=time.sleep, clock=time.monotonic,
            environ: Mapping[str, str] = os.environ) -> int:
    check_on_disk(args.repository, args.model, args.version)
    out(f"disk: {args.model} v{args.version} validates in {args.repository}")
    started: bool | None = False  # None: asked, no answer yet
    try:
        with router_api(args.router, environ) as router:
            before_loading(router, args.model, args.version, out)
            with triton_api(args.triton, environ) as triton:
                ensure_ready(triton, args.model, args.version, out, sleep, clock)
            wait_router_sees(router, args.model, args.version, sleep, clock)
            if args.shadow is not None:
                refusal = shadow_refusal(run_shadow(router, args, out, sleep, clock), args.min_agreement)
                if refusal:
                    out(f"stopped: {refusal}; no rollout was started")
                    return 3
            started = None
            state = router.call("POST", f"{rollout_path(args.model)}/start", start_body(args))
            started = True
            if args.no_wait:
                out(state_line(state))
                return 0
            return follow(lambda: router.call("GET", rollout_path(args.model)), args.version, out, sleep, clock,
                          state)
    except KeyboardInterrupt:
        see = f"`python -m export status {args.model}`; `python -m export rollback {args.model}` ends a rollout"
        if started is False:
            raise Interrupted("interrupted; no rollout was started") from None
        if started is None:
            raise Interrupted(f"interrupted while starting the rollout of {args.model} v{args.version} "
                              f"({see})") from None
        raise Interrupted(f"interrupted; the rollout of {args.model} v{args.version} goes on in the router "
                          f"({see})") from None


def rollback(args: RollbackArgs, out: Out = print, environ: Mapping[str, str] = os.environ) -> int:
    with router_api(args.router, environ) as router:
        body = {"reason": args.reason} if args.reason else {}
        state = router.call("POST", f"{rollout_path(args.model)}/rollback", body)
    out(state_line(as_dict(state)))
    return 0


def status(args: StatusArgs, out: Out = print, environ: Mapping[str, str] = os.environ) -> int:
    with router_api(args.router, environ) as router:
        answer = router.call("GET", rollout_path(args.model) if args.model else "/admin/rollouts")
    if args.as_json:
        out(json.dumps(answer, indent=2))
        return 0
    states = [as_dict(answer)] if args.model else [{"model": m, **as_dict(s)} for m, s in as_dict(answer).items()]
    for line in status_table(states):
        out(line)
    return 0
