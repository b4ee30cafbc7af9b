"""A rollout state (GET /admin/rollouts/{model}) as lines for a terminal.

Every nested figure may be missing or null: it is shown as `-`.
"""

from __future__ import annotations

import math
from typing import Any


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, spec: str, suffix: str = "", scale: float = 1) -> str:
    return f"{value * scale:{spec}}{suffix}" if is_number(value) else "-"


def version_label(value: Any) -> str:
    return f"v{value}" if value is not None else "-"


def step_label(state: dict) -> str:
    steps, step = state.get("steps"), state.get("step")
    return f"{int(step) + 1 if is_number(step) else '-'}/{len(steps) if isinstance(steps, list) and steps else '-'}"


def _analysis(state: dict, name: str) -> dict:
    return as_dict(as_dict(state.get("analysis")).get(name))


def verdict_of(state: dict) -> dict:
    """The verdict on the current step; none while a new step awaits its first."""
    verdict, step = _analysis(state, "verdict"), state.get("step")
    if step is not None and verdict.get("step") is not None and verdict["step"] != step:
        return {}
    return verdict


def figures_of(state: dict, name: str) -> dict:
    """`canary`, `default` or `shadow`: as judged by the verdict, else as counted so far (`analysis.live`)."""
    return as_dict(verdict_of(state).get(name)) or as_dict(_analysis(state, "live").get(name))


def shadow_figures(state: dict) -> dict:
    """The shadow comparison counted so far, else the last verdict's."""
    return (as_dict(_analysis(state, "live").get("shadow")) or as_dict(_analysis(state, "verdict").get("shadow"))
            or _analysis(state, "shadow"))


def _own_version(figures: dict, fallback: Any) -> str:
    return version_label(figures["version"] if figures.get("version") is not None else fallback)


def _arm(name: str, figures: dict, version: Any) -> str:
    return (f"{name} {_own_version(figures, version)}: {fmt(figures.get('requests'), '.0f')} req, "
            f"{fmt(figures.get('error_rate'), '.2f', '%', 100)} err, p99 {fmt(figures.get('p99_ms'), '.1f', ' ms')}")


def _judgement(verdict: dict) -> str:
    result = str(verdict.get("result") or "-")
    if result != "pass" and verdict.get("reason"):
        result += f": {verdict['reason']}"
    if result == "pending" and is_number(verdict.get("ends_in_s")):
        result += f" ({verdict['ends_in_s']:.0f} s left)"
    return result


def live_line(state: dict) -> str:
    """`step 2/4  25%  canary v3: 812 req, 0.00% err, p99 4.1 ms | default v2: ... | agreement 99.2% | pass`"""
    status, shadow = state.get("status"), figures_of(state, "shadow")
    head = f"step {step_label(state)}  {fmt(state.get('canary_percent'), 'g', '%')}"
    columns = [_arm("canary", figures_of(state, "canary"), state.get("canary_version")),
               _arm("default", figures_of(state, "default"), state.get("default_version"))]
    if shadow or _analysis(state, "policy").get("min_agreement") is not None:
        columns.append(f"agreement {fmt(shadow.get('agreement'), '.1f', '%', 100)}")
    columns.append(_judgement(verdict_of(state)))
    prefix = f"{status}  " if status not in ("progressing", None) else ""
    return f"{prefix}{head}  " + " | ".join(columns)


def shadow_line(figures: dict, version: int) -> str:
    return (f"shadow {_own_version(figures, version)}: {fmt(figures.get('requests'), '.0f')} req, "
            f"agreement {fmt(figures.get('agreement'), '.1f', '%', 100)}, {fmt(figures.get('errors'), '.0f')} err")


def state_line(state: dict) -> str:
    """`sentiment: progressing, default v2, canary v3 at 5%, step 1/4, shadow -, revision 8`"""
    shadow = version_label(state.get("shadow_version"))
    if state.get("shadow_version") is not None:
        shadow += f" at {fmt(state.get('shadow_percent'), 'g', '%')}"
    line = (f"{state.get('model', '-')}: {state.get('status', '-')}, "
            f"default {version_label(state.get('default_version'))}, "
            f"canary {version_label(state.get('canary_version'))} at {fmt(state.get('canary_percent'), 'g', '%')}, "
            f"step {step_label(state)}, shadow {shadow}, revision {state.get('revision', '-')}")
    return line + (f" ({state['reason']})" if state.get("reason") else "")


def status_table(states: list[dict]) -> list[str]:
    rows = [("MODEL", "STATUS", "DEFAULT", "CANARY", "PERCENT", "STEP", "SHADOW", "REVISION")]
    for s in states:
        shadow = s.get("shadow_version")
        rows.append((str(s.get("model", "-")), str(s.get("status", "-")), version_label(s.get("default_version")),
                     version_label(s.get("canary_version")), fmt(s.get("canary_percent"), "g", "%"),
                     step_label(s) if s.get("step") is not None else "-",
                     f"{version_label(shadow)} {fmt(s.get('shadow_percent'), 'g', '%')}" if shadow is not None else "-",
                     str(s.get("revision", "-"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]

