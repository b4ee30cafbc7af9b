"""`python -m bench.loadgen`: load from a separate process, printed as JSON.

Closed loop: C clients, each sends its next request when the last answers.
Open loop: requests are scheduled at a fixed rate whatever happens, and
latency counts from the scheduled send time, so a slow server cannot hide
its tail behind a stalled client (no coordinated omission).
The first --warmup samples are dropped.

Targets: the router's /predict (`router`) and /ping, Triton over gRPC
(`triton`, tritonclient.grpc.aio), the Open Inference Protocol's JSON infer
route of Triton or of the router (`oip`, the same body to either), and a
Redis GET. `client_cpu` is this process's CPU time over the run's wall time:
near 1.0, the load generator itself was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter

import numpy as np

TEXT_LENGTH = 256


def encode(text: str) -> np.ndarray:
    raw = text.encode()[:TEXT_LENGTH]
    out = np.zeros((1, TEXT_LENGTH), dtype=np.uint8)
    out[0, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return out


def make_text(i: int, unique: bool, run: str) -> str:
    return f"benchmark {run} request {i} was great" if unique else "benchmark: the same text, always great"


TOKENS = 16  # embedder requests: one fixed length, so that Triton's dynamic batcher can stack them
_WORDS = [2023, 2003, 1037, 23760, 6251, 2055, 1996, 2653, 1997, 4274]  # ordinary WordPiece ids


def make_tokens(i: int, unique: bool, run: str) -> np.ndarray:
    """[1, TOKENS] int64 ids, [CLS] ... [SEP]; when unique, four of them spell
    the request number and the run, so no two requests are the same."""
    ids = [101, *_WORDS, 1010, 1010, 1010, 1010, 102]
    if unique:
        tag = int(run, 16)
        ids[11:15] = [1000 + i % 20000, 1000 + i // 20000 % 20000, 1000 + tag % 20000, 1000 + tag // 20000 % 20000]
    return np.array([ids], dtype=np.int64)


def make_inputs(model: str, i: int, unique: bool, run: str) -> list[tuple[str, str, np.ndarray]]:
    """(name, datatype, array) of one request to `model` (embedder, or a sentiment-like text model)."""
    if model == "embedder":
        ids = make_tokens(i, unique, run)
        return [("input_ids", "INT64", ids), ("attention_mask", "INT64", np.ones_like(ids))]
    return [("text", "UINT8", encode(make_text(i, unique, run)))]


def wanted_outputs(model: str) -> list[tuple[str, int]]:
    """(output, class_count): the sentiment models are asked for their top class, as the router asks."""
    return [("embedding", 0)] if model == "embedder" else [("probabilities", 1)]


def oip_body(model: str, i: int, unique: bool, run: str) -> dict:
    """The JSON body of an Open Inference Protocol infer request."""
    outputs = [{"name": name, **({"parameters": {"classification": count}} if count else {})}
               for name, count in wanted_outputs(model)]
    inputs = [{"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}
              for name, datatype, array in make_inputs(model, i, unique, run)]
    return {"inputs": inputs, "outputs": outputs}


async def target(args, seen: Counter):
    """(send(i) coroutine factory, close) for the chosen target; `seen["hit"]`
    counts the answers that said `X-Cache: HIT` (the router's header)."""
    run = uuid.uuid4().hex[:8]
    if args.target in ("router", "ping"):
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False),
                                        timeout=aiohttp.ClientTimeout(total=30))
        url = args.url.rstrip("/")
        ping, predict = f"{url}/ping", f"{url}/predict"
        headers = {"Content-Type": "application/json"}

        def predict_body(i: int) -> bytes:
            body = {"text": make_text(i, args.unique, run)}
            if args.model_version:
                body["model_version"] = args.model_version
            return json.dumps(body).encode()
        # the same work per request as the `oip` target: one body encoded once unless each is unique
        same = predict_body(0)

        async def send(i: int) -> bool:
            if args.target == "ping":
                async with session.get(ping) as resp:
                    await resp.read()
                    return resp.status == 200
            body = predict_body(i) if args.unique else same
            async with session.post(predict, data=body, headers=headers) as resp:
                await resp.read()
                seen["hit"] += resp.headers.get("X-Cache") == "HIT"
                return resp.status == 200
        return send, session.close
    if args.target == "oip":
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False),
                                        timeout=aiohttp.ClientTimeout(total=30))
        version = f"/versions/{args.model_version}" if args.model_version else ""
        url = f"{args.url.rstrip('/')}/v2/models/{args.model}{version}/infer"
        headers = {"Content-Type": "application/json"}
        same = json.dumps(oip_body(args.model, 0, False, run)).encode()

        async def send(i: int) -> bool:
            body = json.dumps(oip_body(args.model, i, True, run)).encode() if args.unique else same
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                seen["hit"] += resp.headers.get("X-Cache") == "HIT"
                return resp.status == 200
        return send, session.close
    if args.target == "triton":
        import tritonclient.grpc.aio as grpcclient

        client = grpcclient.InferenceServerClient(args.url)
        outputs = [grpcclient.InferRequestedOutput(name, class_count=count)
                   for name, count in wanted_outputs(args.model)]

        async def send(i: int) -> bool:
            tensors = []
            for name, datatype, array in make_inputs(args.model, i, args.unique, run):
                tensors.append(grpcclient.InferInput(name, list(array.shape), datatype))
                tensors[-1].set_data_from_numpy(array)
            await client.infer(args.model, tensors, model_version=args.model_version or "", outputs=outputs)
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


def percentiles(lat_ms: np.ndarray) -> dict:
    return {"p50_ms": round(float(np.percentile(lat_ms, 50)), 3), "p95_ms": round(float(np.percentile(lat_ms, 95)), 3),
            "p99_ms": round(float(np.percentile(lat_ms, 99)), 3), "mean_ms": round(float(lat_ms.mean()), 3)}


def summarise(latencies, errors: int, warmup: int, keep: bool = False) -> dict:
    """Latency percentiles and throughput over the samples after the first
    `warmup` requests (by request index); `keep`: every kept latency too, so
    that the runs of several load generators can be merged."""
    kept = sorted(latencies)[warmup:]
    lat = np.array([l for _, l, _ in kept])
    span = max(e for _, _, e in kept) - min(e - l for _, l, e in kept)
    lat_ms = lat * 1000
    out = {"samples": len(kept), "errors": errors, "duration_s": round(span, 3),
           "throughput_rps": round(len(kept) / span, 1) if span > 0 else 0.0, **percentiles(lat_ms)}
    if keep:
        out["latencies_ms"] = [round(float(x), 4) for x in lat_ms]
    return out


def merge(results: list[dict]) -> dict:
    """One row from load generators that ran side by side (each with
    --keep-latencies): counts and throughputs summed, percentiles over
    every latency, `client_cpu` the busiest generator's, `clients_cpu` all of theirs."""
    lat_ms = np.concatenate([np.asarray(r["latencies_ms"]) for r in results])
    out = {"samples": sum(r["samples"] for r in results), "errors": sum(r["errors"] for r in results),
           "duration_s": max(r["duration_s"] for r in results),
           "throughput_rps": round(sum(r["throughput_rps"] for r in results), 1), **percentiles(lat_ms),
           "client_cpu": max(r["client_cpu"] for r in results),
           "clients_cpu": round(sum(r["client_cpu"] for r in results), 2), "procs": len(results)}
    if all("hits" in r for r in results):
        out["hits"] = sum(r["hits"] for r in results)
    return out


async def main_async(args) -> dict:
    seen: Counter = Counter()
    send, close = await target(args, seen)
    try:
        total = args.samples + args.warmup
        wall, cpu = time.perf_counter(), time.process_time()
        if args.mode == "closed":
            lat, errors = await closed_loop(send, total, args.concurrency)
        else:
            lat, errors = await open_loop(send, total, args.rate)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await close()
    out = summarise(lat, errors, args.warmup, args.keep_latencies)
    out["client_cpu"] = round(cpu / wall, 2) if wall > 0 else 0.0
    if args.target in ("router", "oip"):
        out["hits"] = seen["hit"]  # warm-up included
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=["router", "ping", "triton", "oip", "redis"], required=True)
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
    parser.add_argument("--keep-latencies", action="store_true", help="print every kept latency too")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(main_async(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
