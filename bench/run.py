"""`make bench` (`python -m bench.run`): every scenario in one run, on this
machine, measured by a separate load-generator process (or several side by
side, where one would set the pace). The router is measured beside its
baselines, Triton's own response cache and direct gRPC calls
(bench/compare.py), and the report's ratios come from that same run. Writes
bench/results/<time>.json, bench/results/latest.md and PNG plots."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench import compare
from bench.cpu import CpuMeter
from bench.loadgen import make_text, merge
from bench.report import update_readme, write_report
from bench.stack import BATCH_MODEL, HEAVY_MODEL, ROOT, BenchStack

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sizes:
    samples: int
    warmup: int
    saturation_concurrency: int
    load_fractions: tuple[float, ...]
    batching_concurrency: tuple[int, ...]
    identical: int
    rounds: int
    compare_concurrency: tuple[int, ...]  # the router against Triton's cache and direct gRPC (bench/compare.py)
    compare_samples: int
    cache_procs: int  # load generators side by side on Triton's cache hits from 16 clients on
    embed_concurrency: tuple[int, ...]
    embed_samples: int
    hit_samples: int  # cache hits (router and Triton's cache): fast, so more of them for a steady figure
    compare_rounds: int  # the sentiment comparison, interleaved, this many times: its ratios are of medians
    instrumentation_calls: int  # hits recorded in-process to measure the instrumentation's cost


FULL = Sizes(2000, 200, 32, (0.25, 0.5, 0.75), (1, 8, 32), 200, 3, (1, 16, 64), 1000, 2, (16, 64), 500, 6000, 3, 50_000)
SMOKE = Sizes(40, 5, 8, (0.5,), (1, 8), 20, 1, (1, 16), 40, 2, (16,), 40, 40, 1, 500)


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release()}


class Runner:
    def __init__(self, stack: BenchStack, sizes: Sizes) -> None:
        self.stack = stack
        self.sizes = sizes
        self.rows: list[dict] = []

    def load(self, scenario: str, variant: str, target: str, url: str, mode: str = "closed",
             concurrency: int = 8, rate: float = 0.0, unique: bool = False, samples: int | None = None,
             procs: int = 1, cpu: bool = False, **extra) -> dict:
        """One point, from `procs` load generators side by side (closed loop:
        the clients, samples and warm-up split between them, results merged);
        `cpu`: with the cores each server process used meanwhile."""
        samples = samples or self.sizes.samples
        warmup = max(1, samples * self.sizes.warmup // self.sizes.samples)
        cmd = [sys.executable, "-m", "bench.loadgen", "--target", target, "--url", url, "--mode", mode,
               "--concurrency", str(concurrency // procs), "--rate", str(rate), "--samples", str(samples // procs),
               "--warmup", str(warmup // procs)]
        cmd += ["--unique"] if unique else []
        cmd += ["--keep-latencies"] if procs > 1 else []
        for key, value in extra.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        meter = self.cpu_meter() if cpu else None
        started = meter.snapshot() if meter else None
        children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(procs)]
        finished = [(child, *child.communicate(timeout=600)) for child in children]
        server_cpu = meter.cores(started, meter.snapshot()) if meter else None
        for child, out, err in finished:
            if child.returncode != 0:
                raise subprocess.CalledProcessError(child.returncode, cmd, out, err)
        outputs = [json.loads(out) for _, out, _ in finished]
        result = merge(outputs) if procs > 1 else outputs[0]
        row = {"scenario": scenario, "variant": variant, "mode": mode,
               "offered": f"c={concurrency}" if mode == "closed" else f"{rate:.0f}/s", **result,
               "requests": (samples // procs + warmup // procs) * procs}
        if server_cpu is not None:
            row["server_cpu"] = server_cpu
        self.rows.append(row)
        print(f"  {scenario:<14} {variant:<22} {row['offered']:>8}  {row['throughput_rps']:>8.1f}/s  "
              f"p50 {row['p50_ms']:>7.2f}  p99 {row['p99_ms']:>7.2f} ms  errors {row['errors']}  "
              f"client cpu {row['client_cpu']:.2f}" + (f" x{procs}" if procs > 1 else ""), flush=True)
        return row

    def cpu_meter(self) -> CpuMeter:
        names = {r.proc.pid: f"router {name}" for name, r in self.stack.routers.items() if r.proc}
        if self.stack.redis.proc:
            names[self.stack.redis.proc.pid] = "redis"
        tritons = {server.process.pid: label for server, label in ((self.stack.triton, "tritonserver"),
                                                                   (self.stack.cache_triton, "triton with cache"))
                   if server is not None and server.process is not None}
        return CpuMeter(names, tritons)

    @property
    def triton_grpc(self) -> str:
        return self.stack.triton.grpc_url

    def router(self, name: str) -> str:
        return self.stack.routers[name].url

    def run(self) -> dict:
        s = self.sizes
        c = s.saturation_concurrency
        # 1 + 6: saturation, direct vs the router (1 and 2 processes), cache misses
        direct = self.load("saturation", "direct triton", "triton", self.triton_grpc, concurrency=c, unique=True,
                           model_version=2)
        miss = self.load("saturation", "router miss", "router", self.router("grpc"), concurrency=c, unique=True)
        self.load("saturation", "router miss, 2 procs", "router", self.router("two"), concurrency=c, unique=True)
        # latency against offered load (open loop), below the router's saturation
        base = min(direct["throughput_rps"], miss["throughput_rps"])
        httpx.post(f"{self.router('grpc')}/predict", json={"text": make_text(0, False, "")}, timeout=30)  # warm
        for fraction in s.load_fractions:
            rate = max(5.0, base * fraction)
            self.load(f"open {int(fraction * 100)}%", "direct triton", "triton", self.triton_grpc, "open",
                      rate=rate, unique=True, model_version=2)
            self.load(f"open {int(fraction * 100)}%", "router miss", "router", self.router("grpc"), "open",
                      rate=rate, unique=True)
            self.load(f"open {int(fraction * 100)}%", "router hit", "router", self.router("grpc"), "open", rate=rate)
        # 2: a cache hit vs a raw Redis GET of the same payload vs a no-op route
        self.load("hit", "router hit", "router", self.router("grpc"), concurrency=8)
        key = self.cached_key()
        self.load("hit", "redis GET", "redis", self.stack.redis.url, concurrency=8, key=key)
        self.load("hit", "router /ping", "ping", self.router("grpc"), concurrency=8)
        # 3: dynamic batching on vs off, same model file: the light sentiment v2, and a heavy variant
        for model, scenario in ((BATCH_MODEL, "batching"), (HEAVY_MODEL, "batching heavy")):
            for conc in s.batching_concurrency:
                for suffix in ("batched", "unbatched"):
                    self.load(scenario, suffix, "triton", self.triton_grpc, concurrency=conc, unique=True,
                              model=f"{model}_{suffix}")
        # 4: router -> Triton over gRPC vs HTTP
        for name in ("grpc", "http"):
            self.load("protocol", f"router via {name}", "router", self.router(name), concurrency=16, unique=True)
        # 7: instrumentation on vs off, on the router-bound path (cache hits) and on misses; the two
        # routers alternate, 3 rounds, and the report compares medians (one pair is noise on 2 cores)
        # (hits from two generators, as in the comparison: one alone sets the pace of a router hit at 16 clients)
        for _ in range(s.rounds):
            for name, label in (("grpc", "instrumented"), ("bare", "no metrics/logs")):
                self.load("instrumentation", f"hit, {label}", "router", self.router(name), concurrency=16,
                          procs=s.cache_procs)
                self.load("instrumentation", f"miss, {label}", "router", self.router(name), concurrency=16,
                          unique=True)
        # the router against Triton's own cache and direct gRPC, and the embedder's misses
        notes = compare.run(self)
        # 5: single-flight
        flight = asyncio.run(self.identical_cold(s.identical))
        return {"rows": self.rows, "single_flight": flight, "notes": notes,
                "instrumentation": self.instrumentation(s.instrumentation_calls),
                "inprocess": self.inprocess(s.instrumentation_calls // 2)}

    def inprocess(self, hits: int) -> dict:
        """The router's own CPU per hit, fed from memory (bench/inprocess.py)."""
        out = subprocess.run([sys.executable, "-m", "bench.inprocess", self.triton_grpc, str(hits)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=600,
                             check=True).stdout
        result = json.loads(out)
        print(f"  in-process     a hit costs the router {result['predict_us']:.1f} us (/predict), "
              f"{result['v2_us']:.1f} us (/v2 infer) of CPU", flush=True)
        return result

    @staticmethod
    def instrumentation(calls: int) -> dict:
        """The in-process cost of a hit's metrics and access line (bench/instrumentation.py)."""
        out = subprocess.run([sys.executable, "-m", "bench.instrumentation", str(calls)], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=600, check=True).stdout
        result = json.loads(out)
        print(f"  instrumentation  {result['instrumentation_us']:.2f} us per hit in-process "
              f"(metrics {result['metrics_us']:.2f}, access line {result['log_us']:.2f})", flush=True)
        return result

    def cached_key(self) -> str:
        import redis

        client = redis.Redis.from_url(self.stack.redis.url)
        try:
            keys = client.keys("pred:sentiment:v2:*")
            return keys[0].decode()
        finally:
            client.close()

    async def identical_cold(self, n: int) -> dict:
        import tritonclient.http as httpclient

        triton = httpclient.InferenceServerClient(self.stack.triton.http_url.removeprefix("http://"))

        def counts():
            st = triton.get_inference_statistics("sentiment", "1")["model_stats"][0]
            return int(st["inference_count"]), int(st["execution_count"])

        before = counts()
        text = f"identical cold request {time.time()}"
        async with httpx.AsyncClient(base_url=self.router("grpc"), timeout=30) as client:
            responses = await asyncio.gather(*(client.post("/predict", json={"text": text, "model_version": 1})
                                               for _ in range(n)))
        await asyncio.sleep(0.5)  # statistics are recorded just after the response
        after = counts()
        triton.close()
        result = {"requests": n, "ok": sum(r.status_code == 200 for r in responses),
                  "triton_inferences": after[0] - before[0], "triton_executions": after[1] - before[1]}
        print(f"  single-flight  {n} identical cold requests -> {result['triton_inferences']} Triton inference(s)")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that checks the harness works")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        print("starting two Tritons, Redis and 7 routers...", flush=True)
        with BenchStack(Path(tmp), ["grpc", "http", "bare", "two", "local", "routes", "granian"]) as stack:
            results = Runner(stack, sizes).run()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    results.update({"when": stamp, "machine": machine(), "smoke": args.smoke, "sizes": sizes.__dict__,
                    "seconds": round(time.monotonic() - started, 1)})
    path = args.out / f"{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    report = write_report(results, args.out)
    if args.out == RESULTS and not args.smoke and update_readme(ROOT / "README.md", report.read_text()):
        print("README.md's Performance section now shows this run")
    print(f"wrote {path}, {report} and plots in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
