"""README's Performance section is rewritten from a run, between its markers only."""

from bench.report import BEGIN, END, update_readme


def test_the_run_replaces_only_what_stands_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{BEGIN}\n\nold table\n\n{END}\n\nafter\n")
    assert update_readme(readme, "| new | table |\n")
    assert readme.read_text() == f"# Title\n\nbefore\n\n{BEGIN}\n\n| new | table |\n\n{END}\n\nafter\n"
    assert update_readme(readme, "| newer |\n")  # again: the markers stay
    assert readme.read_text().count("newer") == 1 and "new | table" not in readme.read_text()


def test_a_readme_without_markers_is_left_alone(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    assert not update_readme(readme, "| table |\n")
    assert readme.read_text() == "no markers\n"


def _point(variant: str, rps: float, p50: float) -> dict:
    return {"scenario": "sentiment hit", "variant": variant, "offered": "c=16", "throughput_rps": rps,
            "p50_ms": p50, "p95_ms": p50, "p99_ms": p50}


def test_ratios_compare_the_medians_of_a_points_rounds():
    from bench.report import ratios

    rows = [_point("router /predict", rps, p50) for rps, p50 in ((900, 2.0), (1200, 1.0), (1000, 9.0))]
    rows += [_point("triton cache, http json", rps, p50) for rps, p50 in ((1000, 1.0), (500, 2.0), (2000, 4.0))]
    found = {name: (value, source) for name, value, source in ratios(rows)}
    assert found["router /predict hit req/s / Triton cache (HTTP/JSON) req/s, c=16"] == (
        "1.00x", "1000 vs 1000 req/s, medians of 3 rounds")
    assert found["router /predict hit p50 / Triton cache (HTTP/JSON) hit p50, c=16"] == (
        "1.00x", "2.00 vs 2.00 ms, medians of 3 rounds")


def test_the_instrumentation_share_is_its_cost_over_the_routers_cpu_per_hit():
    from bench.report import instrumentation_share, targets

    rows = [dict(_point("router /predict", rps, 1.0), server_cpu={"router grpc": cores})
            for rps, cores in ((10_000, 0.5), (8_000, 0.8), (9_000, 0.9))]  # 50, 100 and 100 us per hit
    results = {"rows": rows, "instrumentation": {"instrumentation_us": 4.0}}
    assert instrumentation_share(results) == (4.0, 4.0, 100.0)
    assert ("instrumentation costs <= 5% of a hit (in-process cost / the router's CPU per hit, c=16)",
            "4.0% (4.00 of 100 us)", True) in targets(results)
    assert instrumentation_share({"rows": rows}) is None
