"""The plots of one benchmark run (PNG, by matplotlib)."""

from __future__ import annotations

from pathlib import Path

from bench.rows import CACHE_HTTP, row_at


def plots(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    made = []
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for variant, color in (("direct triton", "tab:blue"), ("router miss", "tab:orange"), ("router hit", "tab:green")):
        pts = sorted((float(r["offered"].rstrip("/s")), r["p50_ms"], r["p99_ms"]) for r in rows
                     if r["scenario"].startswith("open ") and r["variant"] == variant)
        if pts:
            xs = [p[0] for p in pts]
            ax.plot(xs, [p[1] for p in pts], "o-", color=color, label=f"{variant} p50")
            ax.plot(xs, [p[2] for p in pts], "s--", color=color, alpha=0.6, label=f"{variant} p99")
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    made.append(_save(fig, ax, "Latency vs offered load", out / "latency.png"))

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for scenario, model, style in (("batching", "sentiment v2", "-"), ("batching heavy", "heavy MLP", "--")):
        for variant, color in (("batched", "tab:blue"), ("unbatched", "tab:red")):
            pts = sorted((int(r["offered"][2:]), r["throughput_rps"]) for r in rows
                         if r["scenario"] == scenario and r["variant"] == variant)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o" + style, color=color,
                        label=f"{model}, batching {'on' if variant == 'batched' else 'off'}")
    ax.set_xlabel("concurrent clients (closed loop)")
    ax.set_ylabel("throughput (inferences/s)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    made.append(_save(fig, ax, "Triton dynamic batching", out / "batching.png"))

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"triton cache, grpc": "tab:blue", CACHE_HTTP: "tab:cyan", "direct grpc": "tab:blue",
              "router /predict": "tab:orange", "router /v2 infer": "tab:red"}
    for scenario, style in (("sentiment hit", "o-"), ("sentiment miss", "s--")):
        for variant, color in colors.items():
            concs = sorted({int(r["offered"][2:]) for r in rows if r["scenario"] == scenario and r["variant"] == variant})
            medians = [(c, row_at(rows, scenario, variant, c)) for c in concs]
            pts = [(c, m["throughput_rps"], m["p50_ms"]) for c, m in medians if m is not None]
            if pts:
                label = f"{scenario.split()[1]}: {variant}"
                left.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, label=label)
                right.plot([p[0] for p in pts], [p[2] for p in pts], style, color=color, label=label)
    for ax, ylabel in ((left, "throughput (requests/s)"), (right, "p50 latency (ms)")):
        ax.set_xlabel("concurrent clients (closed loop)")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    left.set_title("sentiment: the router against Triton's cache and direct gRPC")
    left.title.set_fontsize(9)
    right.legend(fontsize=7)
    fig.tight_layout()
    made.append(out / "comparison.png")
    fig.savefig(made[-1], dpi=110)
    plt.close(fig)
    return made


def _save(fig, ax, title: str, path: Path) -> Path:
    """One-panel figure: its title, grid and legend, written to `path` and closed."""
    import matplotlib.pyplot as plt

    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
