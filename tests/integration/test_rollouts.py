"""Rollout states shared by three routers through Redis: a change made through
one is applied by all three, measured; figures to tests/artifacts/rollouts.json."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from devstack.processes import RouterProcess
from router import keys
from tests.conftest import ROOT

ADMIN = keys.new_key()


@pytest.fixture(scope="module")
def routers(triton, redis_server, tmp_path_factory):
    env = {"REDIS_URL": redis_server.url, "API_KEYS": json.dumps([keys.entry("ops", ADMIN, ["admin"], None)]),
           "ANONYMOUS_SCOPES": "predict", "DEFAULT_MODEL_VERSION": "1", "REQUEST_LOGGING": "false",
           "RATE_LIMIT": "none", "CONTROL_REFRESH_S": "30"}  # a slow re-read: the announcements must do it
    workdir = tmp_path_factory.mktemp("rollouts")
    procs = [RouterProcess(workdir / f"r{n}", triton, env) for n in range(3)]
    for proc in procs:
        proc.start()
    try:
        yield procs
    finally:
        for proc in procs:
            proc.stop()
        import redis
        redis.Redis.from_url(redis_server.url).delete("control:rollout:digits")


def served_version(router, user: str) -> int:
    response = httpx.post(f"{router.url}/predict/batch", timeout=10, headers={"X-User-ID": user},
                          json={"model": "digits", "inputs": [{"image_b64": PIXEL}]})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["model_version"]


def test_a_change_through_one_router_is_applied_by_all(routers):
    """20 changes alternating the canary of `digits` between 0% and 100%, each made through
    another router; the time until every router serves accordingly, worst case."""
    worst = 0.0
    for n in range(20):
        percent = 100 if n % 2 == 0 else 0
        started = time.monotonic()
        change = httpx.put(f"{routers[n % 3].url}/admin/rollouts/digits", headers={"X-API-Key": ADMIN}, timeout=10,
                           json={"default_version": 1, "canary_version": 2, "canary_percent": percent})
        assert change.status_code == 200, change.text
        assert change.json()["revision"] == n + 1
        want = 2 if percent == 100 else 1
        for router in routers:
            while served_version(router, f"user-{n}") != want:
                assert time.monotonic() - started < 5, f"router {router.url} did not apply change {n + 1}"
                time.sleep(0.01)
        worst = max(worst, time.monotonic() - started)
    ARTIFACTS = ROOT / "tests" / "artifacts"
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "rollouts.json").write_text(json.dumps({"changes": 20, "routers": 3,
                                                         "worst_propagation_s": round(worst, 3)}) + "\n")
    assert worst < 1.0, worst
    history = httpx.get(f"{routers[1].url}/admin/rollouts/digits", headers={"X-API-Key": ADMIN}).json()["history"]
    assert [h["revision"] for h in history] == list(range(1, 21)) and {h["by"] for h in history} == {"ops"}


def test_a_users_assignment_never_moves_back_while_the_percent_rises(routers):
    """1,000 user ids over 5 -> 25 -> 50 -> 100%, each step set through one router and
    every id asked of another: once on the canary, a user stays there."""
    users = [f"user-{n}" for n in range(1000)]
    seen: dict[str, list[int]] = {u: [] for u in users}
    with httpx.Client(timeout=10) as client:
        for step, percent in enumerate((5, 25, 50, 100)):
            change = client.put(f"{routers[step % 3].url}/admin/rollouts/digits", headers={"X-API-Key": ADMIN},
                                json={"default_version": 1, "canary_version": 2, "canary_percent": percent})
            assert change.status_code == 200, change.text
            time.sleep(1.2)  # every router has applied it (measured above: well under a second)
            for n, user in enumerate(users):
                response = client.post(f"{routers[(n + step + 1) % 3].url}/predict/batch",
                                       headers={"X-User-ID": user},
                                       json={"model": "digits", "inputs": [{"image_b64": PIXEL}]})
                assert response.status_code == 200, response.text
                seen[user].append(response.json()["results"][0]["model_version"])
    moved_back = [u for u, versions in seen.items() if any(a == 2 and b == 1 for a, b in zip(versions, versions[1:]))]
    assert moved_back == []
    on_canary = [sum(v[step] == 2 for v in seen.values()) / len(users) for step in range(4)]
    assert on_canary[-1] == 1.0
    for share, percent in zip(on_canary, (5, 25, 50)):
        assert abs(share - percent / 100) < 0.05, on_canary


PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEAWk1v8QAAAABJRU5ErkJggg=="
