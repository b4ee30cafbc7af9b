"""Canary splits and failures: versions unloaded, Redis killed, Triton stopped."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter

import httpx
import pytest
import tritonclient.http as httpclient

from local_triton import Ports, TritonServer
from router.dataplane.routing import in_canary
from devstack.processes import RedisServer, RouterProcess, free_port


async def _traffic(url: str, n: int, make_request, concurrency: int = 16, on_progress=None):
    sem = asyncio.Semaphore(concurrency)
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async def one(i):
            nonlocal done
            async with sem:
                resp = await make_request(client, i)
            done += 1
            if on_progress:
                on_progress(done)
            return resp
        return await asyncio.gather(*(one(i) for i in range(n)))


@pytest.fixture(scope="module")
def canary_router(triton, tmp_path_factory):
    with RouterProcess(tmp_path_factory.mktemp("canary"), triton, {"TRITON_REFRESH_S": "0.5",
        "DEFAULT_MODEL_VERSION": "2", "CANARY_VERSION": "1", "CANARY_PERCENT": "20",
        "REQUEST_LOGGING": "false",
    }) as proc:
        yield proc


def test_canary_share_and_stickiness(canary_router):
    responses = asyncio.run(_traffic(canary_router.url, 2000, lambda c, i: c.get(
        "/predict", params={"text": "steady traffic"}, headers={"X-Request-ID": f"canary-share-{i}"})))
    assert all(r.status_code == 200 for r in responses)
    routed = Counter((r.json()["routed_by"], r.json()["model_version"]) for r in responses)
    assert set(routed) == {("canary", 1), ("default", 2)}
    share = routed[("canary", 1)] / len(responses) * 100
    assert 17 <= share <= 23, f"canary share {share:.1f}%"
    users = asyncio.run(_traffic(canary_router.url, 300, lambda c, i: c.get(
        "/predict", params={"text": "sticky"}, headers={"X-User-ID": f"user-{i % 30}"})))
    versions: dict[str, set[int]] = {}
    for r in users:
        versions.setdefault(r.request.headers["x-user-id"], set()).add(r.json()["model_version"])
    assert all(len(v) == 1 for v in versions.values())
    assert {next(iter(v)) for v in versions.values()} == {1, 2}  # 30 users land on both sides


def test_canary_unloaded_mid_traffic_falls_back(triton, canary_router):
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    config = client.get_model_config("sentiment")
    without_v1 = {**config, "version_policy": {"specific": {"versions": [2]}}}
    canary_users = [u for u in (f"user-{i}" for i in range(2000)) if in_canary(u, 20)][:50]
    unloaded = threading.Event()

    def unload_at(done):
        if done == 150 and not unloaded.is_set():
            unloaded.set()
            threading.Thread(target=httpx.post, args=(f"{triton.http_url}/v2/repository/models/sentiment/load",),
                             kwargs={"json": {"parameters": {"config": json.dumps(without_v1)}},
                                     "timeout": 60}).start()

    try:
        responses = asyncio.run(_traffic(canary_router.url, 600, lambda c, i: c.post(
            "/predict", json={"text": f"mid traffic {i} {uuid.uuid4().hex[:6]}"},
            headers={"X-User-ID": canary_users[i % len(canary_users)]}), on_progress=unload_at))
        assert [r.status_code for r in responses if r.status_code != 200] == []
        deadline = time.monotonic() + 30
        while client.is_model_ready("sentiment", "1") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not client.is_model_ready("sentiment", "1")
        after = [httpx.post(f"{canary_router.url}/predict", json={"text": "after unload"},
                            headers={"X-User-ID": u}, timeout=30) for u in canary_users[:10]]
        assert [(r.status_code, r.json()["routed_by"], r.json()["model_version"], r.json()["requested_version"])
                for r in after] == [(200, "fallback", 2, 1)] * 10
        routed = Counter(r.json()["routed_by"] for r in responses)
        assert routed["canary"] > 0  # before the unload
    finally:
        # back to every version (a plain load would keep the override: nothing on disk changed)
        client.load_model("sentiment", config=json.dumps(config))
        for _ in range(100):
            if client.is_model_ready("sentiment", "1"):
                break
            time.sleep(0.2)
        assert client.is_model_ready("sentiment", "1") and client.is_model_ready("sentiment", "2")
        client.close()


def test_redis_killed_mid_run_then_back(triton, tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        with RouterProcess(tmp_path / "router", triton, {"TRITON_REFRESH_S": "0.5",
            "REDIS_URL": redis.url, "REDIS_BACKOFF_MAX_S": "0.5", "REDIS_TIMEOUT_S": "0.1",
        }) as router:
            killed = threading.Event()

            def kill_at(done):
                if done == 100 and not killed.is_set():
                    killed.set()
                    redis.kill()

            run = uuid.uuid4().hex[:6]  # every text new: each request goes to Redis, before and after the kill
            responses = asyncio.run(_traffic(router.url, 400, lambda c, i: c.get(
                "/predict", params={"text": f"redis run {run} {i}"}), on_progress=kill_at))
            assert [r.status_code for r in responses if r.status_code != 200] == []
            assert httpx.get(f"{router.url}/health").json()["redis"] == "down"
            metrics = httpx.get(f"{router.url}/metrics").text
            assert any(ln.startswith("redis_errors_total{") and float(ln.rsplit(" ", 1)[1]) > 0
                       for ln in metrics.splitlines())

            redis = RedisServer(tmp_path / "redis2", port=redis.port).start()
            deadline = time.monotonic() + 15
            sources = []
            while time.monotonic() < deadline:
                text = f"after restart {uuid.uuid4().hex[:8]}"
                httpx.get(f"{router.url}/predict", params={"text": text})
                time.sleep(1.2)  # past the in-process single-flight window: a hit now comes from Redis
                sources.append(httpx.get(f"{router.url}/predict", params={"text": text}).json()["source"])
                if sources[-1] == "cache":
                    break
            assert sources[-1] == "cache", sources
            assert httpx.get(f"{router.url}/health").json()["redis"] == "ok"
    finally:
        redis.stop()


def test_lazy_loading_then_triton_stopped(tmp_path):
    """A Triton with only `digits` loaded; the router loads `sentiment` on first
    use (LOAD_ALL_MODELS=false), runs with the in-process cache (no REDIS_URL),
    and answers 503 with the error body once Triton is gone."""
    from tests.conftest import MODEL_REPOSITORY

    server = TritonServer(MODEL_REPOSITORY, Ports(free_port(), free_port(), free_port()), models=["digits"],
                          log_path=tmp_path / "triton.log")
    with server:
        with RouterProcess(tmp_path / "router", server, {"LOAD_ALL_MODELS": "false",
                                                               "TRITON_REFRESH_S": "0.5"}) as router:
            models = httpx.get(f"{router.url}/models").json()["models"]
            assert models["sentiment"]["versions"] == {} or "READY" not in models["sentiment"]["versions"].values()
            assert httpx.get(f"{router.url}/health").json()["redis"] == "disabled"
            first = httpx.get(f"{router.url}/predict", params={"text": "lazy but good"}, timeout=60)
            assert first.status_code == 200, first.text
            assert first.json()["model_version"] == 2
            assert httpx.get(f"{router.url}/predict", params={"text": "lazy but good"}).json()["source"] == "cache"
            assert httpx.get(f"{router.url}/ready").status_code == 200

            server.stop()
            resp = httpx.get(f"{router.url}/predict", params={"text": "triton is gone"}, timeout=30)
            assert resp.status_code == 503
            assert resp.json() == {"error": {"code": "triton_unavailable", "message": "Triton is unreachable",
                                             "request_id": resp.headers["x-request-id"]}}
            deadline = time.monotonic() + 10
            while httpx.get(f"{router.url}/ready").status_code != 503 and time.monotonic() < deadline:
                time.sleep(0.2)
            ready = httpx.get(f"{router.url}/ready")
            assert ready.status_code == 503 and ready.json()["triton"] is False
            health = httpx.get(f"{router.url}/health")
            assert health.status_code == 200 and health.json()["triton"] == "unreachable"
            # a graceful shutdown with Triton gone (uvicorn re-raises SIGTERM once it is done)
            assert router.stop() in (0, -15), router.log.read_text()[-6000:]
            assert "Application shutdown complete." in router.log.read_text()
