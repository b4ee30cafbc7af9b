"""`python -m bench.instrumentation`: what the instrumentation costs per
request, measured in-process and printed as JSON: a cache hit's metrics
(the request's counter and latency histogram, its cache lookup, its tier)
and its JSON access line, each on and off, over many calls of the same code
the router runs. A throughput pair of routers with it on and off measures
the same thing through the noise of shared cores; this is its floor.

Its stderr is the access lines' (run it with stderr to /dev/null)."""

from __future__ import annotations

import json
import sys
import time

CALLS = 50_000


def per_call(metrics: bool, logs: bool, calls: int) -> float:
    """Microseconds per hit recorded as the edge and the cache record one."""
    from router import context
    from router.edge.middleware import Edge
    from router.edge.routes import predictions
    from router.metrics import Metrics

    m = Metrics(metrics)
    edge = Edge(1 << 20, m, logs)
    scope = {"route": predictions.router.routes[0], "method": "POST", "path": "/predict"}
    record, token = context.begin("0123456789abcdef0123456789abcdef")
    record.model, record.version, record.routed_by, record.cache, record.key_name = \
        "sentiment", 2, "default", "HIT", "anonymous"

    def hit():
        m.observe_cache("sentiment", 2, True)
        m.observe_tier_hit("local")
        edge.record(scope, record, 200, 0.0012)
    try:
        for _ in range(min(1000, calls)):
            hit()
        started = time.perf_counter()
        for _ in range(calls):
            hit()
        return 1e6 * (time.perf_counter() - started) / calls
    finally:
        context.end(token)


def measure(calls: int = CALLS) -> dict:
    from router.logs import configure_logging

    configure_logging("INFO", True)
    # interleaved, best of 3 each: the floor of each, as the rest is the machine's noise
    runs: dict[str, list[float]] = {"both": [], "metrics": [], "logs": [], "none": []}
    for _ in range(3):
        for name, flags in (("both", (True, True)), ("metrics", (True, False)), ("logs", (False, True)),
                            ("none", (False, False))):
            runs[name].append(per_call(*flags, calls))
    best = {name: min(values) for name, values in runs.items()}
    return {"calls": calls, "us_per_hit": {name: round(v, 3) for name, v in best.items()},
            "metrics_us": round(best["metrics"] - best["none"], 3), "log_us": round(best["logs"] - best["none"], 3),
            "instrumentation_us": round(best["both"] - best["none"], 3)}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    print(json.dumps(measure(int(args[0]) if args else CALLS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
