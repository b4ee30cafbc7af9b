"""The markdown table and the targets of one benchmark run, and README's copy of it (the plots: plots.py)."""

from __future__ import annotations

import math
from pathlib import Path

from bench.plots import plots
from bench.rows import CACHE_HTTP, HOT_PATHS, NO_REDIS, ROUTES, load_label, median_rps, row, row_at


def targets(results: dict) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for every target the run can judge."""
    rows = results["rows"]
    out = []
    opens = sorted({r["scenario"] for r in rows if r["scenario"].startswith("open ")},
                   key=lambda s: int(s.split()[1].rstrip("%")))
    for scenario in opens + ["saturation"]:
        d, m = row(rows, scenario, "direct triton"), row(rows, scenario, "router miss")
        if not (d and m):
            continue
        p50 = m["p50_ms"] - d["p50_ms"]
        pct = 100 * p50 / d["p50_ms"]
        p99 = m["p99_ms"] - d["p99_ms"]
        out.append((f"router miss p50 overhead <= 1.0 ms and <= 25% ({scenario})",
                    f"{p50:+.2f} ms ({pct:+.0f}%)", p50 <= 1.0 and pct <= 25))
        out.append((f"router miss p99 overhead <= 3 ms ({scenario})", f"{p99:+.2f} ms", p99 <= 3.0))
    hit, get = row(rows, "hit", "router hit"), row(rows, "hit", "redis GET")
    if hit and get:
        ratio = hit["p50_ms"] / get["p50_ms"]
        out.append(("cache hit p50 <= 4x a raw Redis GET p50", f"{ratio:.1f}x ({hit['p50_ms']:.2f} vs "
                    f"{get['p50_ms']:.2f} ms)", ratio <= 4))
    for scenario in ("batching", "batching heavy"):
        conc = max((int(r["offered"][2:]) for r in rows if r["scenario"] == scenario), default=0)
        b, u = row_at(rows, scenario, "batched", conc), row_at(rows, scenario, "unbatched", conc)
        if b and u:
            ratio = b["throughput_rps"] / u["throughput_rps"]
            model = "heavy MLP" if scenario.endswith("heavy") else "sentiment v2"
            out.append((f"dynamic batching >= 3x unbatched throughput at c={conc} ({model})", f"{ratio:.2f}x",
                        ratio >= 3))
    d, m = row(rows, "saturation", "direct triton"), row(rows, "saturation", "router miss")
    if d and m:
        ratio = m["throughput_rps"] / d["throughput_rps"]
        out.append(("router throughput >= 0.6x direct Triton at saturation", f"{ratio:.2f}x", ratio >= 0.6))
    flight = results.get("single_flight")
    if flight:
        out.append((f"{flight['requests']} identical cold requests -> <= 2 Triton executions",
                    f"{flight['triton_inferences']} inference(s)", flight["triton_inferences"] <= 2))
    for kind in ("hit", "miss"):
        on = median_rps(rows, "instrumentation", f"{kind}, instrumented")
        off = median_rps(rows, "instrumentation", f"{kind}, no metrics/logs")
        if on and off:
            cost = 100 * (1 - on / off)
            out.append((f"instrumentation costs <= 5% throughput ({kind}, median of rounds)",
                        f"{cost:.1f}% ({on:.0f} vs {off:.0f} req/s)", cost <= 5))
    share = instrumentation_share(results)
    if share:
        pct, us, hit_us = share
        out.append(("instrumentation costs <= 5% of a hit (in-process cost / the router's CPU per hit, c=16)",
                    f"{pct:.1f}% ({us:.2f} of {hit_us:.0f} us)", pct <= 5))
    return out + against_baselines(rows)


def router_us_per_hit(rows: list[dict], scenario: str = "sentiment hit", variant: str = ROUTES[0],
                      router: str = "grpc") -> float | None:
    """A router's CPU per `/predict` hit at 16 clients, median of the rounds (from the cores it used)."""
    label = f"router {router}"
    found = sorted(1e6 * r["server_cpu"][label] / r["throughput_rps"] for r in rows
                   if r["scenario"] == scenario and r["variant"] == variant and r["offered"] == "c=16"
                   and label in r.get("server_cpu", {}) and r["throughput_rps"])
    return found[len(found) // 2] if found else None


HOT_POINTS = (("hot path hit", "/predict"), ("hot path hit", "/v2 infer"), ("hot path miss", "/predict"),
              ("hot path miss", "/v2 infer"))


def hot_path_table(rows: list[dict]) -> list[str]:
    """Each hot-path candidate's four points at 16 clients (medians of the rounds), its
    CPU per `/predict` hit, and its throughput against the lane's (the geometric mean
    of the four ratios)."""
    found = {label: [row_at(rows, scenario, f"{label} {route}", 16) for scenario, route in HOT_POINTS]
             for label, _ in HOT_PATHS}
    if not all(all(points) for points in found.values()):
        return []
    lane = found[HOT_PATHS[0][0]]
    lines = ["| hot path, c=16 | /predict hit req/s | /v2 hit req/s | /predict miss req/s | /v2 miss req/s | "
             "CPU per /predict hit | req/s against the lane |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, router in HOT_PATHS:
        points = found[label]
        ratio = math.prod(p["throughput_rps"] / base["throughput_rps"] for p, base in zip(points, lane))
        cpu = router_us_per_hit(rows, "hot path hit", f"{label} /predict", router)
        shown = "-" if cpu is None else f"{cpu:.0f} us"  # none when the point took no CPU tick
        lines.append(f"| {label} | " + " | ".join(f"{p['throughput_rps']:.0f}" for p in points)
                     + f" | {shown} | {ratio ** (1 / len(points)):.2f}x |")
    return lines


def instrumentation_share(results: dict) -> tuple[float, float, float] | None:
    """(percent, instrumentation us, router us per hit): the in-process cost against a whole hit's."""
    measured, hit_us = results.get("instrumentation"), router_us_per_hit(results["rows"])
    if not measured or not hit_us:
        return None
    return 100 * measured["instrumentation_us"] / hit_us, measured["instrumentation_us"], hit_us


def comparisons(rows: list[dict]) -> list[tuple[str, dict, dict, str, str]]:
    """(name, router row, baseline row, measure, goal) of every comparison the run
    has: measure "p50_ms" or "throughput_rps" as a ratio, "p50 diff" as a
    difference in ms; goal the target's bound ("" where none is set)."""
    out = []

    def add(name: str, mine: dict | None, base: dict | None, measure: str, goal: str) -> None:
        if mine and base:
            out.append((name, mine, base, measure, goal))

    for route in ROUTES:
        for conc in (1, 16):
            add(f"{route} hit p50 / Triton cache (HTTP/JSON) hit p50, c={conc}", row_at(rows, "sentiment hit", route,
                conc), row_at(rows, "sentiment hit", CACHE_HTTP, conc), "p50_ms", "<= 1.0x")
        add(f"{route} hit req/s / Triton cache (HTTP/JSON) req/s, c=16", row_at(rows, "sentiment hit", route, 16),
            row_at(rows, "sentiment hit", CACHE_HTTP, 16), "throughput_rps", ">= 1.0x")
        for conc in (16, 64):
            add(f"{route} miss req/s / direct gRPC req/s, c={conc}", row_at(rows, "sentiment miss", route, conc),
                row_at(rows, "sentiment miss", "direct grpc", conc), "throughput_rps", ">= 1.0x")
        add(f"{route} miss p50 - direct gRPC p50, c=1", row_at(rows, "sentiment miss", route, 1),
            row_at(rows, "sentiment miss", "direct grpc", 1), "p50 diff", "<= 0.3 ms")
    for conc in (16, 64):
        add(f"{NO_REDIS} miss req/s / direct gRPC req/s, c={conc}", row_at(rows, "sentiment miss", NO_REDIS, conc),
            row_at(rows, "sentiment miss", "direct grpc", conc), "throughput_rps", "")
    add(f"{NO_REDIS} miss p50 - direct gRPC p50, c=1", row_at(rows, "sentiment miss", NO_REDIS, 1),
        row_at(rows, "sentiment miss", "direct grpc", 1), "p50 diff", "")
    for conc in (16, 64):
        add(f"{ROUTES[1]} miss req/s / direct gRPC req/s, c={conc} (embedder)", row_at(rows, "embedder miss",
            ROUTES[1], conc), row_at(rows, "embedder miss", "direct grpc", conc), "throughput_rps", "")
    return out


def _measured(mine: dict, base: dict, measure: str) -> tuple[float, str, str]:
    """(value, as shown, from what) of one comparison."""
    if measure == "p50 diff":
        diff = mine["p50_ms"] - base["p50_ms"]
        rounds = f", medians of {mine['rounds']} rounds" if mine.get("rounds", 1) > 1 else ""
        return diff, f"{diff:+.2f} ms", f"{mine['p50_ms']:.2f} vs {base['p50_ms']:.2f} ms{rounds}"
    fmt, unit = (".0f", "req/s") if measure == "throughput_rps" else (".2f", "ms")
    value = mine[measure] / base[measure]
    rounds = f", medians of {mine['rounds']} rounds" if mine.get("rounds", 1) > 1 else ""
    return value, f"{value:.2f}x", f"{mine[measure]:{fmt}} vs {base[measure]:{fmt}} {unit}{rounds}"


def against_baselines(rows: list[dict]) -> list[tuple[str, str, bool]]:
    """The router's targets against Triton's own response cache and direct gRPC calls, same run."""
    out = []
    for name, mine, base, measure, goal in comparisons(rows):
        if goal:
            value, shown, source = _measured(mine, base, measure)
            bound = float(goal.split()[1].rstrip("x"))
            out.append((f"{name} {goal}", f"{shown} ({source})", value <= bound if goal.startswith("<=") else
                        value >= bound))
    return out


def ratios(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(ratio, value, from) of the router against its baselines, from the rows of the same run."""
    return [(name, *_measured(mine, base, measure)[1:]) for name, mine, base, measure, _ in comparisons(rows)]


def _checks(rows: list[dict]) -> list[str]:
    """The hits each hit point really got, and how busy the load generators were on the baselines."""
    hits = [f"{r['variant']} {r['offered']} {r['hits']}/{r['requests']}" for r in rows
            if r["scenario"] == "sentiment hit" and "hits" in r]
    busy = [f"{r['variant']} {load_label(r)} {r['client_cpu']:.2f}" for r in rows
            if r["scenario"] in ("sentiment hit", "sentiment miss")]
    out = []
    if hits:
        out.append("Hits, of every request sent including warm-up (Triton's own `cache_hit` count for Triton's "
                   "cache, the `X-Cache: HIT` header for the router): " + "; ".join(hits) + ".")
    if busy:
        out.append("Load-generator CPU (CPU seconds per wall second of the busiest generator; "
                   "1.00 would mean the generator, not the server, set the pace): " + "; ".join(busy) + ".")
    return out


def cpu_table(rows: list[dict]) -> list[str]:
    """Where the cores went during each comparison point: every server process, and the generators."""
    measured = [r for r in rows if "server_cpu" in r]
    if not measured:
        return []
    labels = sorted({label for r in measured for label in r["server_cpu"]})
    lines = ["| cores used | load | req/s | generators | " + " | ".join(labels) + " | all |",
             "|---|---|---:|---:|" + "---:|" * (len(labels) + 1)]
    for r in measured:
        gens = r.get("clients_cpu", r["client_cpu"])  # every generator's together
        used = [r["server_cpu"].get(label, 0.0) for label in labels]
        lines.append(f"| {r['scenario']}: {r['variant']} | {load_label(r)} | {r['throughput_rps']:.0f} | {gens:.2f} | "
                     + " | ".join(f"{u:.2f}" for u in used) + f" | {gens + sum(used):.2f} |")
    return lines


def triton_table(rows: list[dict]) -> list[str]:
    """Triton's side of each miss point, from its own statistics."""
    measured = [r for r in rows if "triton" in r]
    if not measured:
        return []
    lines = ["| Triton's side | load | req/s | Triton requests | rows per execution | queue ms per request | "
             "compute us per row | model busy |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in measured:
        t = r["triton"]
        lines.append(f"| {r['scenario']}: {r['variant']} | {load_label(r)} | {r['throughput_rps']:.0f} | {t['requests']} | "
                     f"{t['rows_per_execution']:.1f} | {t['queue_ms_per_request']:.2f} | {t['compute_us_per_row']:.0f} | "
                     f"{100 * t['busy']:.0f}% |")
    return lines


def markdown(results: dict) -> str:
    m, sizes = results["machine"], results["sizes"]
    fewer = ""
    if "compare_samples" in sizes:
        hits = f", {sizes['hit_samples']} on its cache hits" if "hit_samples" in sizes else ""
        rounds = sizes.get("compare_rounds", 1)
        rounds = (f"; the `sentiment` points in {rounds} interleaved rounds, listed in order, whose medians the ratios "
                  "compare" if rounds > 1 else "")
        fewer = (f" (other counts on the comparison scenarios: {sizes['compare_samples']} on `sentiment`{hits}, "
                 f"{sizes['embed_samples']} on the embedder, with warm-up in proportion{rounds})")
    lines = [f"Run {results['when']} on {m['cores']} cores ({m['cpu']}), Python {m['python']}; "
             f"{sizes['samples']} samples per point after {sizes['warmup']} warm-up{fewer}; "
             f"{results['seconds']:.0f} s in all. `N gens`: N load-generator processes side by side, summed.", "",
             "| scenario | variant | load | samples | errors | req/s | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['scenario']} | {r['variant']} | {load_label(r)} | {r['samples']} | {r['errors']} | "
                     f"{r['throughput_rps']:.0f} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} |")
    for paragraph in _checks(results["rows"]) + [f"Note: {note}." for note in results.get("notes", [])]:
        lines += ["", paragraph]
    cores = cpu_table(results["rows"])
    if cores:
        lines += ["", "CPU seconds per wall second of each process during each comparison point (a core is 1.00; "
                      "this machine has " + str(m["cores"]) + "):", ""] + cores
    triton = triton_table(results["rows"])
    if triton:
        lines += ["", "What Triton did during each miss point (its own statistics: the requests it received, rows per "
                      "execution, time in its queue, compute per row, and the share of the time the model was "
                      "executing):", ""] + triton
    hot = hot_path_table(results["rows"])
    if hot:
        lines += ["", "The hot path's candidates, side by side (bench/compare.py: `hot path hit` and `hot path miss`, "
                      "medians of the rounds; the router serves the first):", ""] + hot
    measured = ratios(results["rows"])
    if measured:
        lines += ["", "| ratio (same run) | value | from |", "|---|---:|---|"]
        lines += [f"| {name} | {value} | {source} |" for name, value, source in measured]
    measured = results.get("instrumentation")
    if measured:
        lines += ["", f"Instrumentation, in-process ({measured['calls']} hits recorded as the router records them, "
                      f"best of 3): {measured['instrumentation_us']:.2f} us per hit, of which metrics "
                      f"{measured['metrics_us']:.2f} us and the access line {measured['log_us']:.2f} us."]
    own = results.get("inprocess")
    if own:
        lines += ["", f"The router's own CPU per cache hit, in-process ({own['hits']} hits fed to its HTTP protocol "
                      f"from memory, best of 3; its Python work without the sockets and wake-ups): "
                      f"{own['predict_us']:.1f} us `/predict`, {own['v2_us']:.1f} us `/v2` infer."]
    flight = results.get("single_flight")
    if flight:
        lines += ["", f"Single-flight: {flight['requests']} identical cold requests ({flight['ok']} answered 200) -> "
                      f"{flight['triton_inferences']} Triton inference(s), {flight['triton_executions']} execution(s)."]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {'yes' if ok else '**no**'} |" for t, v, ok in targets(results)]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- bench:latest begin -->", "<!-- bench:latest end -->"


def update_readme(readme: Path, table: str) -> bool:
    """Puts `table` between README's two bench markers; False when the markers are not there."""
    text = readme.read_text()
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        return False
    readme.write_text(text[:start + len(BEGIN)] + "\n\n" + table.rstrip("\n") + "\n\n" + text[stop:])
    return True


def write_report(results: dict, out: Path) -> Path:
    path = out / "latest.md"
    path.write_text(markdown(results))
    plots(results, out)
    return path
