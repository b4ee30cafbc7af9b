"""The router side by side with what it stands in front of, in one run, with
the same inputs and the same closed-loop load:

- `sentiment hit`: Triton's own response cache (a second Triton whose
  `sentiment` config enables it) over gRPC and over HTTP/JSON, against the
  router's cache behind /predict and behind /v2/models/sentiment/infer, each
  after warming the one input used. Every hit is counted where it happened:
  Triton's `cache_hit` statistics, the router's `X-Cache: HIT` header.
- `sentiment miss`: direct `tritonclient.grpc.aio` calls to the normal Triton
  against the router's two routes, every request a new input; and /predict
  on a router without Redis (its in-process tier alone), which parts a
  miss's cost into the Redis round trips and the rest.
- `embedder miss`: the same on the sentence encoder, where the work per
  request is real and Triton's dynamic batcher matters (skipped, with a
  note, when `make models` has not built it).
- `hot path hit` / `hot path miss`: the candidates for serving the prediction
  routes, side by side: the lane inside uvicorn's httptools protocol (what
  the router runs), FastAPI's own routes under uvicorn (`FAST_PATH=false`),
  and the same app under granian's ASGI interface (its ASGI fast path: the
  lane lives in uvicorn's protocol).

Every miss point also records Triton's side, from its own statistics: the
requests and rows it received, its executions, and how busy the model was.
"""

from __future__ import annotations

import time

import httpx

from bench.loadgen import make_inputs, make_text, oip_body, wanted_outputs
from bench.rows import HOT_PATHS, NO_REDIS
from bench.stack import BATCH_VERSION, CACHED_MODEL, ROOT

EMBEDDER = "embedder"


def _triton_hits(url: str) -> int:
    """Triton's count of inferences answered from its response cache, all versions of CACHED_MODEL."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        stats = client.get_inference_statistics(CACHED_MODEL)["model_stats"]
        return sum(int(s["inference_stats"]["cache_hit"]["count"]) for s in stats)
    finally:
        client.close()


def _triton_totals(url: str, model: str, version: str) -> dict:
    """Triton's own counts for one model version: requests, rows, executions,
    queue time, and the compute time of its executions (from `batch_stats`,
    one entry per execution, where `inference_stats` counts a batch's time
    once per request in it)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        stats = client.get_inference_statistics(model, version)["model_stats"][0]
    finally:
        client.close()
    batches = stats.get("batch_stats", [])
    return {"requests": int(stats["inference_stats"]["success"]["count"]), "rows": int(stats["inference_count"]),
            "executions": sum(int(b["compute_infer"]["count"]) for b in batches),
            "queue_ns": int(stats["inference_stats"]["queue"]["ns"]),
            "compute_ns": sum(int(b[k]["ns"]) for b in batches
                              for k in ("compute_input", "compute_infer", "compute_output"))}


def triton_side(runner, model: str, version: str, load) -> dict:
    """`load()` (one point), with what Triton did meanwhile added to its row
    as `triton`: requests and rows received, executions, rows per execution,
    queue time per request, compute per row, and the share of the wall time
    its executions took (one model instance: how busy the model was)."""
    url = runner.stack.triton.http_url
    before, started = _triton_totals(url, model, version), time.perf_counter()
    row = load()
    wall, after = time.perf_counter() - started, _triton_totals(url, model, version)
    d = {k: after[k] - before[k] for k in before}
    if d["executions"] and d["requests"] and d["rows"]:
        row["triton"] = {"requests": d["requests"], "rows": d["rows"], "executions": d["executions"],
                         "rows_per_execution": round(d["rows"] / d["executions"], 1),
                         "queue_ms_per_request": round(d["queue_ns"] / d["requests"] / 1e6, 3),
                         "compute_us_per_row": round(d["compute_ns"] / d["rows"] / 1e3, 1),
                         "busy": round(d["compute_ns"] / 1e9 / wall, 2)}
    return row


def _warm(runner) -> None:
    """One request of the input every hit scenario repeats, to each cache."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(runner.stack.cache_triton.grpc_url)
    try:
        tensors = []
        for name, datatype, array in make_inputs(CACHED_MODEL, 0, False, ""):
            tensors.append(grpcclient.InferInput(name, list(array.shape), datatype))
            tensors[-1].set_data_from_numpy(array)
        outputs = [grpcclient.InferRequestedOutput(n, class_count=c) for n, c in wanted_outputs(CACHED_MODEL)]
        client.infer(CACHED_MODEL, tensors, model_version=str(BATCH_VERSION), outputs=outputs)
    finally:
        client.close()
    router = runner.router("grpc")
    httpx.post(f"{router}/predict", json={"text": make_text(0, False, "")}, timeout=30).raise_for_status()
    httpx.post(f"{router}/v2/models/{CACHED_MODEL}/infer", json=oip_body(CACHED_MODEL, 0, False, ""),
               timeout=30).raise_for_status()


def sentiment(runner) -> None:
    """Hits, then misses, each point once per round: single points on shared
    cores vary by tens of percent from minute to minute, and the ratios are
    taken between medians of rounds that alternated the same way."""
    _warm(runner)
    for _ in range(runner.sizes.compare_rounds):
        _sentiment_hits(runner)
        _sentiment_misses(runner)


def _sentiment_hits(runner) -> None:
    s = runner.sizes
    cache, router = runner.stack.cache_triton, runner.router("grpc")
    version = str(BATCH_VERSION)
    for conc in s.compare_concurrency:
        procs = s.cache_procs if conc >= 16 else 1
        for variant, target, url in (("triton cache, grpc", "triton", cache.grpc_url),
                                     ("triton cache, http json", "oip", cache.http_url)):
            before = _triton_hits(cache.http_url)
            row = runner.load("sentiment hit", variant, target, url, concurrency=conc, samples=s.hit_samples,
                              procs=procs, cpu=True, model=CACHED_MODEL, model_version=version)
            row["hits"] = _triton_hits(cache.http_url) - before
        # The same load generators on both sides: at c>=16 one Python generator, not the server, sets the pace.
        runner.load("sentiment hit", "router /predict", "router", router, concurrency=conc,
                    samples=s.hit_samples, procs=procs, cpu=True)
        runner.load("sentiment hit", "router /v2 infer", "oip", router, concurrency=conc,
                    samples=s.hit_samples, procs=procs, cpu=True, model=CACHED_MODEL)


def _sentiment_misses(runner) -> None:
    s, router, version = runner.sizes, runner.router("grpc"), str(BATCH_VERSION)
    for conc in s.compare_concurrency:
        for variant, target, url, extra in (("direct grpc", "triton", runner.triton_grpc,
                                             {"model": CACHED_MODEL, "model_version": version}),
                                            ("router /predict", "router", router, {}),
                                            ("router /v2 infer", "oip", router, {"model": CACHED_MODEL}),
                                            (NO_REDIS, "router", runner.router("local"), {})):
            triton_side(runner, CACHED_MODEL, version, lambda: runner.load(
                "sentiment miss", variant, target, url, concurrency=conc, unique=True, samples=s.compare_samples,
                cpu=True, **extra))


def embedder(runner) -> str | None:
    """The embedder's misses; a note instead when it is not built."""
    if not any(p.is_dir() and p.name.isdigit() for p in (ROOT / "model_repository" / EMBEDDER).glob("*")):
        return f"{EMBEDDER}: not built (run `make models`), its scenario was skipped"
    s = runner.sizes
    for conc in s.embed_concurrency:
        for variant, target, url in (("direct grpc", "triton", runner.triton_grpc),
                                     ("router /v2 infer", "oip", runner.router("grpc"))):
            triton_side(runner, EMBEDDER, "1", lambda: runner.load(
                "embedder miss", variant, target, url, concurrency=conc, unique=True, samples=s.embed_samples,
                model=EMBEDDER))
    return None


def hot_path(runner) -> None:
    """Hits and misses on both prediction routes at 16 clients through each
    candidate stack (`HOT_PATHS`), in interleaved rounds."""
    s = runner.sizes
    for _ in range(s.compare_rounds):
        for label, name in HOT_PATHS:
            url = runner.router(name)
            for route, target, extra in (("/predict", "router", {}), ("/v2 infer", "oip", {"model": CACHED_MODEL})):
                runner.load("hot path hit", f"{label} {route}", target, url, concurrency=16, samples=s.hit_samples,
                            procs=s.cache_procs, cpu=True, **extra)
                runner.load("hot path miss", f"{label} {route}", target, url, concurrency=16, unique=True,
                            samples=s.compare_samples, cpu=True, **extra)


def run(runner) -> list[str]:
    """Every comparison scenario; the notes for the report."""
    sentiment(runner)
    hot_path(runner)
    note = embedder(runner)
    return [note] if note else []
