"""The router over real HTTP, in front of the real Triton and a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
import uuid

import httpx
import pytest

from devstack.processes import RouterProcess
from tests.router.edge.bad_inputs import BAD_INPUTS, digit_png, expected

ROUTES = '{"digits": {"default_version": 2}}'


@pytest.fixture(scope="module")
def router(triton, redis_server, tmp_path_factory):
    with RouterProcess(tmp_path_factory.mktemp("router"), triton, {"TRITON_REFRESH_S": "0.5",
        "REDIS_URL": redis_server.url, "DEFAULT_MODEL_VERSION": "2", "MODEL_ROUTES": ROUTES,
    }) as proc:
        yield proc


@pytest.fixture
def http(router):
    with httpx.Client(base_url=router.url, timeout=30) as client:
        yield client


def unique(prefix: str = "text") -> str:
    return f"{prefix} {uuid.uuid4().hex[:12]} is wonderful"


def test_repeat_is_served_from_cache(http):
    text = unique()
    first = http.get("/predict", params={"text": text})
    second = http.get("/predict", params={"text": text})
    assert first.status_code == second.status_code == 200
    a, b = first.json(), second.json()
    assert (a["source"], a["cached"], first.headers["x-cache"]) == ("model", False, "MISS")
    assert (b["source"], b["cached"], second.headers["x-cache"]) == ("cache", True, "HIT")
    assert a["prediction"] == b["prediction"] == "positive"
    assert a["model"] == "sentiment" and a["model_version"] == 2 and a["routed_by"] == "default"
    assert a["input"] == text and a["latency_ms"] > 0
    assert first.headers["x-model-version"] == "2"
    assert set(a) == {"request_id", "model", "model_version", "input", "prediction", "confidence", "scores",
                      "source", "cached", "latency_ms", "routed_by"}


def test_pinned_versions_have_their_own_cache_entries(http):
    text = unique()
    v1 = http.post("/predict", params={"model_version": "v1"}, json={"text": text})
    assert v1.status_code == 200
    assert (v1.json()["model_version"], v1.json()["routed_by"], v1.headers["x-cache"]) == (1, "pinned", "MISS")
    v2 = http.post("/predict", json={"input": text, "model_version": 2})
    assert (v2.json()["model_version"], v2.json()["routed_by"], v2.headers["x-cache"]) == (2, "pinned", "MISS")
    again = http.post("/predict", json={"text": text, "model_version": "v1"})
    assert (again.json()["model_version"], again.headers["x-cache"]) == (1, "HIT")


def test_unknown_version_falls_back_and_says_so(http):
    body = http.post("/predict", json={"text": unique(), "model_version": "v9"}).json()
    assert (body["model_version"], body["routed_by"], body["requested_version"]) == (2, "fallback", 9)


def test_top_k_scores_and_labels(http):
    body = http.post("/predict", json={"text": "this was a terrible, awful day", "top_k": 2}).json()
    assert body["prediction"] == "negative"
    assert list(body["scores"]) == ["negative", "positive"]
    assert sum(body["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["confidence"] == body["scores"]["negative"]


def test_image_upload_and_base64_predict_the_digit(http):
    png, label = digit_png(3)
    up = http.post("/models/digits/predict", files={"file": ("three.png", png, "image/png")}, params={"top_k": 3})
    assert up.status_code == 200, up.text
    body = up.json()
    assert (body["model"], body["model_version"], body["prediction"]) == ("digits", 2, str(label))
    assert len(body["scores"]) == 3 and "input" not in body
    b64 = http.post("/predict", json={"model": "digits", "image_b64": base64.b64encode(digit_png(5)[0]).decode()})
    assert b64.json()["prediction"] == str(digit_png(5)[1])
    bright_ink = http.post("/models/digits/predict", files={"file": ("x.png", digit_png(7, invert=False)[0])})
    assert bright_ink.json()["prediction"] == "7"


def test_batch_caches_each_item(http):
    known = unique("known")
    http.get("/predict", params={"text": known, "top_k": 2})  # top_k is part of the cache key
    fresh = [unique("a"), unique("b")]
    resp = http.post("/predict/batch", json={"inputs": [fresh[0], known, {"text": fresh[1]}], "top_k": 2})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["input"] for r in results] == [fresh[0], known, fresh[1]]
    assert [r["cached"] for r in results] == [False, True, False]
    assert resp.headers["x-cache"] == "MISS"
    again = http.post("/predict/batch", json={"inputs": fresh + [known], "top_k": 2})
    assert [r["cached"] for r in again.json()["results"]] == [True, True, True]
    assert again.headers["x-cache"] == "HIT"


def test_request_id_round_trip(http):
    resp = http.get("/predict", params={"text": "hello"}, headers={"X-Request-ID": "client-req.42"})
    assert resp.headers["x-request-id"] == "client-req.42" == resp.json()["request_id"]
    err = http.post("/predict", json={"text": "x", "model": "nope"}, headers={"X-Request-ID": "client-err-1"})
    assert err.json()["error"]["request_id"] == "client-err-1" == err.headers["x-request-id"]
    made = http.get("/predict", params={"text": "hello"}, headers={"X-Request-ID": "not a sane id!"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert made.json()["request_id"] == made.headers["x-request-id"]


def test_request_log_lines_carry_the_request_id(http, router):
    http.get("/predict", params={"text": "log me"}, headers={"X-Request-ID": "log-line-check"})
    import json
    deadline = time.monotonic() + 3  # access lines are written in blocks, every 0.2 s
    while not (lines := [json.loads(ln) for ln in router.log.read_text().splitlines() if "log-line-check" in ln]):
        assert time.monotonic() < deadline, "no log line for the request"
        time.sleep(0.05)
    entry = lines[-1]
    assert entry["request_id"] == "log-line-check" and entry["status"] == 200
    assert {"model", "version", "routed_by", "cache", "latency_ms"} <= entry.keys()


@pytest.mark.parametrize("send,status,code,message", BAD_INPUTS)
def test_bad_input_gets_a_clear_error(http, triton_repo, send, status, code, message):
    resp = send(http)
    assert resp.status_code == status, resp.text
    models = [p.name for p in triton_repo.iterdir() if (p / "config.pbtxt").is_file()]
    assert resp.json() == {"error": {"code": code, "message": expected(message, models),
                                     "request_id": resp.headers["x-request-id"]}}


def test_huge_image_is_refused(http):
    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", (5000, 4000), 255).save(buf, format="PNG")  # small file, 20 Mpx
    resp = http.post("/models/digits/predict", files={"file": ("big.png", buf.getvalue())})
    assert resp.status_code == 413
    assert resp.json()["error"]["message"] == "image is 5000x4000; at most 16777216 pixels are accepted"


def test_health_ready_models_stats(http):
    health = http.get("/health").json()
    assert health == {"status": "ok", "model_loaded": True, "triton": "ready", "redis": "ok", "auth": "off"}
    ready = http.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    models = http.get("/models").json()["models"]
    assert models["sentiment"]["versions"]["1"] == "READY" and models["sentiment"]["default_version"] == 2
    assert models["sentiment"]["labels"] == ["negative", "positive"]
    assert models["digits"]["input_kind"] == "image_gray" and models["digits"]["input_shape"] == [8, 8]
    stats = http.get("/stats").json()
    assert stats["total_requests"] > 0 and 0 < stats["cache_hit_rate"] < 1 and stats["avg_latency_ms"] > 0
    assert stats["requests_by_version"]["sentiment:v2"] > 0
    assert "/docs" in http.get("/docs").text or http.get("/docs").status_code == 200
    assert "/predict/batch" in http.get("/openapi.json").json()["paths"]


def _metric(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_named_and_counting(http):
    before = http.get("/metrics").text
    text = unique()
    http.get("/predict", params={"text": text})
    http.get("/predict", params={"text": text})
    after = http.get("/metrics").text
    assert _metric(after, "cache_hits_total", model="sentiment", version="2") == \
        _metric(before, "cache_hits_total", model="sentiment", version="2") + 1
    assert _metric(after, "cache_miss_total", model="sentiment", version="2") == \
        _metric(before, "cache_miss_total", model="sentiment", version="2") + 1
    assert _metric(after, "loaded_model_versions", model="sentiment") >= 2
    assert _metric(after, "router_requests_total", route="/predict", model="sentiment", status="200") >= \
        _metric(before, "router_requests_total", route="/predict", model="sentiment", status="200") + 2
    for name in ("router_request_duration_seconds_bucket", "canary_assignments_total", "fallbacks_total",
                 "triton_errors_total", "redis_errors_total", "triton_request_duration_seconds_count"):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_count')} " in after


async def _burst(url: str, n: int, make_request, concurrency: int = 32):
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async def one(i):
            async with sem:
                return await make_request(client, i)
        return await asyncio.gather(*(one(i) for i in range(n)))


def test_identical_concurrent_cold_requests_reach_triton_once(router, triton_stats):
    text = unique("single flight")
    before = triton_stats("sentiment", 1)
    responses = asyncio.run(_burst(router.url, 200, lambda c, i: c.post(
        "/predict", json={"text": text, "model_version": 1}), concurrency=200))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.json()["prediction"] for r in responses}) == 1  # one answer, shared by all
    for _ in range(30):  # Triton records statistics just after responding
        grown = triton_stats("sentiment", 1) - before
        if grown:
            break
        time.sleep(0.1)
    time.sleep(0.3)
    assert triton_stats("sentiment", 1) - before == 1


def test_router_over_triton_http(triton, tmp_path):
    """TRITON_PROTOCOL=http: the same answers through tritonclient.http.aio."""
    with RouterProcess(tmp_path, triton, {"TRITON_PROTOCOL": "http", "MODEL_ROUTES": ROUTES,
                                          "DEFAULT_MODEL_VERSION": "2"}) as proc:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            text = client.post("/predict", json={"text": "this was a terrible, awful day", "top_k": 2})
            assert text.status_code == 200, text.text
            assert text.json()["prediction"] == "negative" and list(text.json()["scores"]) == ["negative", "positive"]
            png, label = digit_png(4)
            image = client.post("/models/digits/predict", files={"file": ("four.png", png)})
            assert image.json()["prediction"] == str(label)
            models = client.get("/models").json()["models"]
            assert models["digits"]["input_shape"] == [8, 8] and models["sentiment"]["versions"]["2"] == "READY"
            assert client.get("/ready").status_code == 200
