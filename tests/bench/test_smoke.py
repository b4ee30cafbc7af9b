"""A tiny run of the benchmark harness, so that `make bench` keeps working.
It checks that every scenario produced numbers; it asserts no speed."""

import json

from bench.report import targets
from bench.run import main


def test_benchmark_harness_runs_every_scenario(tmp_path):
    assert main(["--smoke", "--out", str(tmp_path)]) == 0
    [result_file] = list(tmp_path.glob("*.json"))
    results = json.loads(result_file.read_text())
    scenarios = {(r["scenario"], r["variant"]) for r in results["rows"]}
    for expected in [("saturation", "direct triton"), ("saturation", "router miss"),
                     ("saturation", "router miss, 2 procs"), ("open 50%", "router hit"), ("hit", "redis GET"),
                     ("hit", "router /ping"), ("batching", "batched"), ("batching", "unbatched"),
                     ("protocol", "router via http"), ("instrumentation", "hit, no metrics/logs"),
                     ("batching heavy", "batched"), ("batching heavy", "unbatched")]:
        assert expected in scenarios
    assert all(r["errors"] == 0 and r["samples"] == 40 and r["p99_ms"] >= r["p50_ms"] > 0 for r in results["rows"])
    assert results["single_flight"]["ok"] == results["single_flight"]["requests"]
    assert len(targets(results)) >= 8  # every target is judged (met or not: this run is too small to say)
    table = (tmp_path / "latest.md").read_text()
    assert "| target | measured | met |" in table
    assert (tmp_path / "latency.png").stat().st_size > 5000 and (tmp_path / "batching.png").stat().st_size > 5000
