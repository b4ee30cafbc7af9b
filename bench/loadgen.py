"""`python -m bench.loadgen`: load from a separate process, printed as JSON.

Closed loop: C clients, each sends its next request when the last answers.
Open loop: requests are scheduled at a fixed rate whatever happens, and
latency counts from the scheduled send time, so a slow server cannot hide
its tail behind a stalled client (no coordinated omission).
The first --warmup samples are dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

import numpy as np

TEXT_LENGTH = 256


def encode(text: str) -> np.ndarray:
    raw = text.encode()[:TEXT_LENGTH]
    out = np.zeros((1, TEXT_LENGTH), dtype=np.uint8)
    out[0, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def make_text(i: int, unique: bool, run: str) -> str:
    return f"benchmark {run} request {i} was great" if unique else "benchmark: the same text, always great"


async def target(args):
    """(send(i) coroutine factory, close) for the chosen target."""
    run = uuid.uuid4().hex[:8]
    if args.target in ("router", "ping"):
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False),
                                        timeout=aiohttp.ClientTimeout(total=30))
        url = args.url.rstrip("/")

        async def send(i: int) -> bool:
            if args.target == "ping":
                async with session.get(f"{url}/ping") as resp:
                    await resp.read()
                    return resp.status == 200
            body = {"text": make_text(i, args.unique, run)}
            if args.model_version:
                body["model_version"] = args.model_version
            async with session.post(f"{url}/predict", json=body) as resp:
                await resp.read()
                return resp.status == 200
        return send, session.close
    if args.target == "triton":
        import tritonclient.grpc.aio as grpcclient

        client = grpcclient.InferenceServerClient(args.url)

        async def send(i: int) -> bool:
            inp = grpcclient.InferInput("text", [1, TEXT_LENGTH], "UINT8")
            inp.set_data_from_numpy(encode(make_text(i, args.unique, run)))
            out = grpcclient.InferRequestedOutput("probabilities", class_count=1)
            await client.infer(args.model, [inp], model_version=args.model_version or "", outputs=[out])
            return True
        return send, client.close
    if args.target == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(args.url, max_connections=256)

        async def send(i: int) -> bool:
            return await client.get(args.key) is not None
        return send, client.aclose
    raise SystemExit(f"unknown target {args.target}")


async def _timed(send, i: int, since: float, latencies: list) -> bool:
    """Send request i; record (i, seconds since `since`, end time); True if it failed."""
    try:
        ok = await send(i)
    except Exception:
        ok = False
    done = time.perf_counter()
    latencies.append((i, done - since, done))
    return not ok


async def closed_loop(send, total: int, concurrency: int) -> tuple[list, int]:
    latencies: list = []
    errors = 0
    counter = iter(range(total))

    async def client():
        nonlocal errors
        for i in counter:
            errors += await _timed(send, i, time.perf_counter(), latencies)
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors


async def open_loop(send, total: int, rate: float) -> tuple[list, int]:
    """Latency counts from each request's scheduled send time."""
    latencies: list = []
    t0 = time.perf_counter() + 0.05

    tasks = []
    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_timed(send, i, scheduled, latencies)))
    return latencies, sum(await asyncio.gather(*tasks))


def summarise(latencies, errors: int, warmup: int) -> dict:
    """Latency percentiles and throughput over the samples after the first
    `warmup` requests (by request index)."""
    kept = sorted(latencies)[warmup:]
    lat = np.array([l for _, l, _ in kept])
    span = max(e for _, _, e in kept) - min(e - l for _, l, e in kept)
    lat_ms = lat * 1000
    return {
        "samples": len(kept), "errors": errors, "duration_s": round(span, 3),
        "throughput_rps": round(len(kept) / span, 1) if span > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 3), "p95_ms": round(float(np.percentile(lat_ms, 95)), 3),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 3), "mean_ms": round(float(lat_ms.mean()), 3),
    }


async def main_async(args) -> dict:
    send, close = await target(args)
    try:
        total = args.samples + args.warmup
        if args.mode == "closed":
            lat, errors = await closed_loop(send, total, args.concurrency)
        else:
            lat, errors = await open_loop(send, total, args.rate)
    finally:
        await close()
    return summarise(lat, errors, args.warmup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=["router", "ping", "triton", "redis"], required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: requests per second")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--unique", action="store_true", help="a new text per request (cache misses)")
    parser.add_argument("--model", default="sentiment")
    parser.add_argument("--model-version", default="")
    parser.add_argument("--key", default="", help="redis: the key to GET")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
