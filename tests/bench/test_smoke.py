"""A tiny run of the benchmark harness, so that `make bench` keeps working.
It checks that every scenario produced numbers; it asserts no speed."""

import json

from bench.report import instrumentation_share, ratios, targets
from bench.rows import HOT_PATHS
from bench.run import main
from bench.stack import ROOT


def test_benchmark_harness_runs_every_scenario(tmp_path):
    assert main(["--smoke", "--out", str(tmp_path)]) == 0
    [result_file] = list(tmp_path.glob("*.json"))
    results = json.loads(result_file.read_text())
    scenarios = {(r["scenario"], r["variant"]) for r in results["rows"]}
    for expected in [("saturation", "direct triton"), ("saturation", "router miss"),
                     ("saturation", "router miss, 2 procs"), ("open 50%", "router hit"), ("hit", "redis GET"),
                     ("hit", "router /ping"), ("batching", "batched"), ("batching", "unbatched"),
                     ("protocol", "router via http"), ("instrumentation", "hit, no metrics/logs"),
                     ("batching heavy", "batched"), ("batching heavy", "unbatched"),
                     ("sentiment hit", "triton cache, grpc"), ("sentiment hit", "triton cache, http json"),
                     ("sentiment hit", "router /predict"), ("sentiment hit", "router /v2 infer"),
                     ("sentiment miss", "direct grpc"), ("sentiment miss", "router /predict"),
                     ("sentiment miss", "router /v2 infer"), ("sentiment miss", "router /predict, no redis"),
                     *((f"hot path {kind}", f"{label} {route}") for kind in ("hit", "miss") for label, _ in HOT_PATHS
                       for route in ("/predict", "/v2 infer"))]:
        assert expected in scenarios
    if (ROOT / "model_repository" / "embedder" / "1").is_dir():
        assert {("embedder miss", "direct grpc"), ("embedder miss", "router /v2 infer")} <= scenarios
    else:
        assert any("embedder" in note for note in results["notes"])
    # every hit was a hit: Triton's own statistics for its cache, X-Cache for the router
    hit_rows = [r for r in results["rows"] if r["scenario"] == "sentiment hit"]
    assert len(hit_rows) == 8 and all(r["hits"] == r["requests"] for r in hit_rows)
    assert all(r["hits"] == 0 for r in results["rows"] if r["scenario"] == "sentiment miss" and "hits" in r)
    # the hot path's candidates: every hit a hit, every miss a miss, each server's CPU counted (granian's worker too)
    hot = [r for r in results["rows"] if r["scenario"].startswith("hot path")]
    assert len(hot) == 12
    assert all(r["hits"] == (r["requests"] if r["scenario"] == "hot path hit" else 0) for r in hot)
    for label, router in HOT_PATHS:
        assert any(r["server_cpu"].get(f"router {router}", 0) > 0 for r in hot if r["variant"].startswith(label))
    assert "The hot path's candidates" in (tmp_path / "latest.md").read_text()
    assert all(r["errors"] == 0 and r["samples"] == 40 and r["p99_ms"] >= r["p50_ms"] > 0 for r in results["rows"])
    # where the cores went, per server process, on every comparison point
    for r in results["rows"]:
        if r["scenario"] in ("sentiment hit", "sentiment miss"):
            assert {"router grpc", "tritonserver", "redis", "triton with cache"} <= set(r["server_cpu"]), r
    # what Triton did during each miss point, from its own statistics
    for r in results["rows"]:
        if r["scenario"] in ("sentiment miss", "embedder miss"):
            t = r["triton"]
            assert 0 < t["executions"] <= t["requests"] <= t["rows"], r
            assert t["compute_us_per_row"] > 0 and 0 < t["busy"] <= 1.5, r
    assert results["single_flight"]["ok"] == results["single_flight"]["requests"]
    # the instrumentation's in-process cost, and its share of a hit
    cost = results["instrumentation"]
    assert cost["us_per_hit"]["both"] > cost["us_per_hit"]["none"] > 0 and cost["metrics_us"] > 0 < cost["log_us"]
    judged = any(t.startswith("instrumentation costs <= 5% of a hit") for t, _, _ in targets(results))
    assert judged == (instrumentation_share(results) is not None)  # none when 40 hits took no CPU tick
    assert "Instrumentation, in-process" in (tmp_path / "latest.md").read_text()
    # the router's own CPU per hit, fed from memory, on both routes
    own = results["inprocess"]
    assert own["hits"] == 250 and own["predict_us"] > 0 and own["v2_us"] > 0
    assert "The router's own CPU per cache hit, in-process" in (tmp_path / "latest.md").read_text()
    assert len(targets(results)) >= 8 + 10  # and each of the router's targets against its baselines  # every target is judged (met or not: this run is too small to say)
    assert len(ratios(results["rows"])) >= 11  # the smoke run has c=1 and c=16: every ratio but c=64's
    table = (tmp_path / "latest.md").read_text()
    assert "| cores used | load |" in table and "| target | measured | met |" in table and "| ratio (same run) | value | from |" in table
    for plot in ("latency.png", "batching.png", "comparison.png"):
        assert (tmp_path / plot).stat().st_size > 5000
