"""Jobs on a real redis-server, run by real worker processes against the real Triton."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
import redis

from devstack.processes import RedisServer, RouterProcess, WorkerProcess, free_port
from router.jobs.store import DEAD, GROUP, STREAM, job_key

# One test client sends a thousand requests in about a second (submits, then each job checked
# against /predict): the per-address rate limit is not what these tests are about.
FAST = {"TRITON_REFRESH_S": "0.5", "REQUEST_LOGGING": "false", "JOB_CLAIM_IDLE_MS": "1000", "RATE_LIMIT": "none"}


@pytest.fixture(scope="module")
def jobs_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("jobs-redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api(triton, jobs_redis, tmp_path_factory):
    with RouterProcess(tmp_path_factory.mktemp("jobs-api"), triton, {"REDIS_URL": jobs_redis.url, **FAST}) as proc:
        yield proc


@pytest.fixture
def db(jobs_redis):
    client = redis.Redis.from_url(jobs_redis.url)
    yield client
    client.close()


def worker(tmp_path, triton, jobs_redis, name, concurrency=8, **env) -> WorkerProcess:
    return WorkerProcess(tmp_path, triton, {"REDIS_URL": jobs_redis.url, **FAST, **env}, concurrency, name)


def statuses(db, ids: list[str]) -> list[str]:
    pipe = db.pipeline()
    for job_id in ids:
        pipe.hget(job_key(job_id), "status")
    return [(s or b"missing").decode() for s in pipe.execute()]


async def _submit_all(url: str, bodies: list[dict]) -> list[str]:
    sem = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        async def one(body):
            async with sem:
                resp = await client.post("/jobs", json=body)
                assert resp.status_code == 202, resp.text
                return resp.json()["job_id"]
        return await asyncio.gather(*(one(b) for b in bodies))


def test_500_jobs_survive_a_killed_worker(api, triton, jobs_redis, db, tmp_path):
    texts = [f"job {i} {uuid.uuid4().hex[:6]} was {'great' if i % 2 else 'awful'}" for i in range(500)]
    ids = asyncio.run(_submit_all(api.url, [{"text": t, "top_k": 2} for t in texts]))
    assert len(set(ids)) == 500
    assert statuses(db, ids).count("queued") == 500

    first = worker(tmp_path, triton, jobs_redis, "worker-a").start()
    try:
        deadline = time.monotonic() + 60
        while statuses(db, ids).count("done") < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.kill()  # SIGKILL part-way, holding jobs it has read but not acknowledged
    finally:
        first.stop()
    done_by_first = statuses(db, ids).count("done")
    assert 100 <= done_by_first < 500
    held = {c["name"].decode(): int(c["pending"]) for c in db.xpending(STREAM, GROUP)["consumers"]}
    assert held.get("worker-a", 0) > 0, "the killed worker held no pending job: nothing was recovered"

    with worker(tmp_path, triton, jobs_redis, "worker-b"):
        deadline = time.monotonic() + 90
        while statuses(db, ids).count("done") < 500 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert statuses(db, ids) == ["done"] * 500, "jobs lost"
    assert db.xpending(STREAM, GROUP)["pending"] == 0
    pipe = db.pipeline()
    for job_id in ids:
        pipe.hexists(job_key(job_id), "payload")
    assert not any(pipe.execute()), "a done job keeps its payload"

    with httpx.Client(base_url=api.url, timeout=30) as client:
        for job_id, text in zip(ids, texts):
            job = client.get(f"/jobs/{job_id}").json()
            direct = client.post("/predict", json={"text": text, "top_k": 2}).json()
            assert job["status"] == "done"
            assert job["result"]["input"] == text and job["result"]["request_id"] == job_id
            assert (job["result"]["prediction"], job["result"]["model_version"]) == \
                (direct["prediction"], direct["model_version"])
            assert job["result"]["scores"] == pytest.approx(direct["scores"], abs=1e-6)


def test_idempotency_key_returns_the_same_job(api, db):
    before = db.xlen(STREAM)
    key = f"order-{uuid.uuid4().hex}"
    with httpx.Client(base_url=api.url) as client:
        first = client.post("/jobs", json={"text": "once"}, headers={"Idempotency-Key": key})
        again = client.post("/jobs", json={"text": "once"}, headers={"Idempotency-Key": key})
        other = client.post("/jobs", json={"text": "once"}, headers={"Idempotency-Key": key + "-2"})
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"] != other.json()["job_id"]
    assert (first.json()["created"], again.json()["created"]) == (True, False)
    assert first.headers["location"] == first.json()["status_url"] == f"/jobs/{first.json()['job_id']}"
    assert db.xlen(STREAM) == before + 2


def test_image_and_batch_jobs(api, triton, jobs_redis, tmp_path):
    from tests.integration.test_router import digit_png

    png, label = digit_png(6)
    with worker(tmp_path, triton, jobs_redis, "worker-c"), httpx.Client(base_url=api.url, timeout=30) as client:
        image = client.post("/jobs", files={"file": ("six.png", png)}, data={"model": "digits", "top_k": "2"})
        batch = client.post("/jobs", json={"inputs": ["great", {"text": "awful"}], "model_version": "v2"})
        assert image.status_code == batch.status_code == 202
        results = {}
        deadline = time.monotonic() + 30
        while len(results) < 2 and time.monotonic() < deadline:
            for name, resp in (("image", image), ("batch", batch)):
                job = client.get(resp.json()["status_url"]).json()
                if job["status"] == "done":
                    results[name] = job["result"]
            time.sleep(0.1)
    assert results["image"]["prediction"] == str(label) and len(results["image"]["scores"]) == 2
    assert [r["prediction"] for r in results["batch"]["results"]] == ["positive", "negative"]
    assert {r["routed_by"] for r in results["batch"]["results"]} == {"pinned"}


def test_a_job_that_keeps_failing_is_dead_lettered(api, triton, jobs_redis, db, tmp_path):
    with httpx.Client(base_url=api.url) as client:
        job_id = client.post("/jobs", json={"text": "doomed"}).json()["job_id"]
    dead_port = free_port()  # nothing listens: every attempt fails
    with worker(tmp_path, triton, jobs_redis, "worker-broken", TRITON_GRPC_URL=f"127.0.0.1:{dead_port}",
                TRITON_TIMEOUT_S="1", JOB_MAX_ATTEMPTS="3", JOB_CLAIM_IDLE_MS="300"):
        deadline = time.monotonic() + 30
        while statuses(db, [job_id]) != ["failed"] and time.monotonic() < deadline:
            time.sleep(0.1)
    job = httpx.get(f"{api.url}/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["attempts"] == 3
    assert job["error"]["code"] == "triton_unavailable" and job["error"]["request_id"] == job_id
    dead = [json.loads(f[b"error"]) | {"job_id": f[b"job_id"].decode()} for _, f in db.xrange(DEAD)]
    assert any(d["job_id"] == job_id for d in dead)
    assert db.xpending(STREAM, GROUP)["pending"] == 0


@pytest.mark.parametrize("send,status,code", [
    (lambda c: c.post("/jobs", json={"text": ""}), 422, "invalid_input"),
    (lambda c: c.post("/jobs", json={"text": 3}), 422, "invalid_input"),
    (lambda c: c.post("/jobs", json={"text": "x", "model": "nope"}), 404, "not_found"),
    (lambda c: c.post("/jobs", json={"text": "x", "model_version": "latest"}), 422, "invalid_input"),
    (lambda c: c.post("/jobs", json={"inputs": ["a"] * 65}), 422, "invalid_input"),
    (lambda c: c.post("/jobs", json={"model": "digits", "image_b64": "???"}), 422, "invalid_input"),
    (lambda c: c.post("/jobs", files={"file": ("x.png", b"not an image")}, data={"model": "digits"}), 422,
     "invalid_input"),
    (lambda c: c.post("/jobs", content=b"{", headers={"content-type": "application/json"}), 400, "bad_request"),
    (lambda c: c.post("/jobs", json={"text": "x" * (1 << 20)}), 413, "payload_too_large"),
])
def test_bad_bodies_are_refused_at_submit_and_nothing_is_queued(api, db, send, status, code):
    before = db.xlen(STREAM)
    with httpx.Client(base_url=api.url) as client:
        resp = send(client)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    assert resp.json()["error"]["request_id"] == resp.headers["x-request-id"]
    assert db.xlen(STREAM) == before


def test_unknown_jobs_are_404(api):
    for job_id in ("0123456789abcdef0123456789abcdef", "not-a-job-id"):
        resp = httpx.get(f"{api.url}/jobs/{job_id}")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_jobs_without_redis_are_503(triton, tmp_path):
    with RouterProcess(tmp_path, triton, {"TRITON_REFRESH_S": "0.5"}) as proc:
        resp = httpx.post(f"{proc.url}/jobs", json={"text": "x"})
    assert resp.status_code == 503
    assert resp.json()["error"] == {"code": "jobs_unavailable", "request_id": resp.headers["x-request-id"],
                                    "message": "asynchronous jobs need Redis: set REDIS_URL (or JOBS_REDIS_URL)"}


def test_sigterm_drains_the_worker(api, triton, jobs_redis, db, tmp_path):
    ids = asyncio.run(_submit_all(api.url, [{"text": f"drain {i} {uuid.uuid4().hex[:6]}"} for i in range(60)]))
    proc = worker(tmp_path, triton, jobs_redis, "worker-d", concurrency=4).start()
    time.sleep(0.3)
    assert proc.stop() == 0  # SIGTERM: stops reading, finishes what it holds, exits 0
    log = proc.log.read_text()
    assert "worker worker-d stopped" in log
    with worker(tmp_path, triton, jobs_redis, "worker-e"):
        deadline = time.monotonic() + 30
        while statuses(db, ids).count("done") < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert statuses(db, ids) == ["done"] * 60
    assert db.xpending(STREAM, GROUP)["pending"] == 0
