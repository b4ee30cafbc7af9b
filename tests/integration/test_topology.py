"""The Compose topology with real processes on loopback: the repository's
nginx.conf (rendered for local ports) over 3 routers, the local Triton, a
redis-server, and Prometheus with the repository's prometheus.yml."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from devstack.processes import free_port
from devstack.topology import Topology


@pytest.fixture(scope="module")
def topology(triton, redis_server, tmp_path_factory):
    with Topology(tmp_path_factory.mktemp("topology"), triton, redis_server.url,
                  [free_port() for _ in range(3)], free_port(), free_port(),
                  router_env={"TRITON_REFRESH_S": "0.5", "REQUEST_LOGGING": "false"},
                  scrape_interval="1s") as topo:
        yield topo


def test_prometheus_reports_every_target_up(topology):
    deadline = time.monotonic() + 30
    health = {}
    while time.monotonic() < deadline:
        targets = httpx.get(f"{topology.prometheus.url}/api/v1/targets").json()["data"]["activeTargets"]
        health = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets}
        if len(health) == 4 and set(health.values()) == {"up"}:
            break
        time.sleep(0.5)
    expected = {("router", f"127.0.0.1:{r.port}") for r in topology.routers}
    assert set(health) == expected | {("triton", next(k for k in health if k[0] == "triton")[1])}
    assert set(health.values()) == {"up"}, health


def test_request_ids_pass_through_nginx(topology):
    given = httpx.get(f"{topology.nginx.url}/predict", params={"text": "hello"},
                      headers={"X-Request-ID": "through-nginx-1"})
    assert given.headers["x-request-id"] == "through-nginx-1" == given.json()["request_id"]
    made = httpx.get(f"{topology.nginx.url}/predict", params={"text": "hello"})
    assert re.fullmatch(r"[0-9a-f]{32}", made.json()["request_id"])  # nginx's $request_id, kept by the router


def test_a_replica_killed_under_load_loses_no_request(topology):
    victim, survivors = topology.routers[0], topology.routers[1:]
    survivor_addrs = {f"127.0.0.1:{r.port}" for r in survivors}
    total, kill_at = 900, 300
    results: list[tuple[int, float, str]] = []
    killed_at: list[float] = []

    async def run():
        sem = asyncio.Semaphore(12)
        async with httpx.AsyncClient(base_url=topology.nginx.url, timeout=30) as client:
            async def one(i):
                async with sem:
                    sent = time.monotonic()
                    resp = await client.get("/predict", params={"text": f"load {i % 150}", "model_version": 1 + i % 2})
                    results.append((resp.status_code, sent, resp.headers.get("x-upstream", "")))
                    if len(results) == kill_at:
                        victim.kill()  # SIGKILL: in-flight requests on it are cut
                        killed_at.append(time.monotonic())
            await asyncio.gather(*(one(i) for i in range(total)))

    asyncio.run(run())
    assert not victim.running() and killed_at
    assert len(results) == total
    assert [s for s, _, _ in results if s != 200] == []
    after = [upstream for _, sent, upstream in results if sent > killed_at[0]]
    assert len(after) > 400
    # the last address nginx tried is the one that answered
    assert {u.split(",")[-1].strip() for u in after} <= survivor_addrs
    served_before = {u.split(",")[-1].strip() for _, sent, u in results if sent <= killed_at[0]}
    assert f"127.0.0.1:{victim.port}" in served_before  # it did take traffic before it died
