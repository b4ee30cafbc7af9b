"""The rows of a benchmark run, and how one point's row is found: by
scenario, variant and load, a point measured in several rounds as the
median of its rounds."""

from __future__ import annotations

import statistics

CACHE_HTTP = "triton cache, http json"
ROUTES = ("router /predict", "router /v2 infer")
NO_REDIS = "router /predict, no redis"  # the in-process cache tier alone: a miss without its Redis round trips
# the hot path's candidates: (label, router in bench/stack.py), the router's own first
HOT_PATHS = (("lane, uvicorn", "grpc"), ("FastAPI routes, uvicorn", "routes"), ("granian, ASGI", "granian"))


def row(rows: list[dict], scenario: str, variant: str) -> dict | None:
    return next((r for r in rows if r["scenario"] == scenario and r["variant"] == variant), None)


def row_at(rows: list[dict], scenario: str, variant: str, conc: int) -> dict | None:
    """The point's row; a point measured in several rounds, their median row."""
    return median_row([r for r in rows if r["scenario"] == scenario and r["variant"] == variant
                       and r["offered"] == f"c={conc}"])


def median_row(found: list[dict]) -> dict | None:
    """One row for a point measured in rounds: each figure the median of its rounds', `rounds` their number."""
    if len(found) <= 1:
        return found[0] if found else None
    out = dict(found[0], rounds=len(found))
    for key in ("throughput_rps", "p50_ms", "p95_ms", "p99_ms"):
        out[key] = statistics.median(r[key] for r in found)
    return out


def median_rps(rows: list[dict], scenario: str, variant: str) -> float | None:
    values = sorted(r["throughput_rps"] for r in rows if r["scenario"] == scenario and r["variant"] == variant)
    return values[len(values) // 2] if values else None


def load_label(r: dict) -> str:
    return r["offered"] + (f", {r['procs']} gens" if r.get("procs", 1) > 1 else "")
