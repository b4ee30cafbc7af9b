"""The job queue when its Redis loses its data, restarts, or stalls: real
redis-server, router and worker processes against the real Triton."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid

import httpx
import pytest
import redis

from devstack.processes import RedisServer, RouterProcess, WorkerProcess
from router.jobs.store import GROUP, STREAM, job_key
from tests.integration.test_jobs import _submit_all, statuses

FAST = {"TRITON_REFRESH_S": "0.5", "REQUEST_LOGGING": "false", "JOB_CLAIM_IDLE_MS": "1000"}


def _submit_async(url: str, bodies: list[dict]) -> list[str]:
    return asyncio.run(_submit_all(url, bodies))


def wait_done(db, ids: list[str], timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while statuses(db, ids).count("done") < len(ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return statuses(db, ids)


def texts(tag: str, n: int) -> list[dict]:
    run = uuid.uuid4().hex[:6]
    return [{"text": f"{tag} {run} {i} was {'great' if i % 2 else 'awful'}"} for i in range(n)]


@pytest.mark.parametrize("loss", ["flushall", "restart_without_data"])
def test_new_jobs_run_after_redis_loses_its_data(triton, tmp_path, loss):
    server = RedisServer(tmp_path / "redis").start()
    env = {"JOBS_REDIS_URL": server.url, **FAST}
    db = redis.Redis.from_url(server.url)
    try:
        with RouterProcess(tmp_path / "router", triton, env) as api, \
                WorkerProcess(tmp_path, triton, env, 4, "worker-r") as worker:
            _submit_async(api.url, texts("before", 40))
            time.sleep(0.3)  # some done, some running, some still queued
            if loss == "flushall":
                db.flushall()
            else:  # the same port, an empty directory: everything is gone
                server.kill()
                server = RedisServer(tmp_path / "redis-empty", port=server.port).start()
            after = _submit_async(api.url, texts("after", 40))
            assert wait_done(db, after) == ["done"] * 40, "jobs submitted after the loss never ran"
            assert worker.running(), "the worker had to be restarted"
            assert db.xpending(STREAM, GROUP)["pending"] == 0
    finally:
        db.close()
        server.stop()


def test_queued_jobs_survive_a_redis_restart(triton, tmp_path):
    """Append-only file on: jobs queued with no worker running, Redis killed and
    started again on the same directory and port, then a worker runs them all."""
    server = RedisServer(tmp_path / "redis").start()
    env = {"JOBS_REDIS_URL": server.url, **FAST}
    try:
        with RouterProcess(tmp_path / "router", triton, env) as api:
            ids = _submit_async(api.url, texts("durable", 30))
        time.sleep(1.5)  # past one everysec fsync, though a killed process loses nothing it wrote
        server.kill()
        server = RedisServer(tmp_path / "redis", port=server.port).start()
        db = redis.Redis.from_url(server.url)
        assert statuses(db, ids) == ["queued"] * 30, "queued jobs were lost with the restart"
        assert db.xlen(STREAM) == 30
        with WorkerProcess(tmp_path, triton, env, 8, "worker-p"):
            assert wait_done(db, ids) == ["done"] * 30
        db.close()
    finally:
        server.stop()


def test_a_submit_during_a_stalled_redis_is_safe_to_retry(triton, tmp_path):
    """Redis stopped (SIGSTOP) while a submit is sent: the router cannot know
    whether it was queued and says so; once Redis resumes, the same
    Idempotency-Key returns the one job, and no job runs twice."""
    server = RedisServer(tmp_path / "redis").start()
    env = {"JOBS_REDIS_URL": server.url, **FAST}
    db = redis.Redis.from_url(server.url)
    keyed, keyless = f"stalled keyed {uuid.uuid4().hex}", f"stalled keyless {uuid.uuid4().hex}"
    key = f"order-{uuid.uuid4().hex}"
    try:
        with RouterProcess(tmp_path / "router", triton, {**env, "JOBS_REDIS_TIMEOUT_S": "0.5"}) as api, \
                httpx.Client(base_url=api.url, timeout=60) as client:
            assert client.post("/jobs", json={"text": "warm up"}).status_code == 202
            before = db.xlen(STREAM)
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                stalled = client.post("/jobs", json={"text": keyed}, headers={"Idempotency-Key": key})
                stalled_keyless = client.post("/jobs", json={"text": keyless})
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            for resp in (stalled, stalled_keyless):
                assert resp.status_code == 503, resp.text
                error = resp.json()["error"]
                assert error["code"] == "jobs_outcome_unknown" and "unknown" in error["message"]
                assert "nothing was queued" not in error["message"]
                assert error["request_id"] == resp.headers["x-request-id"] and int(resp.headers["retry-after"]) >= 1
            assert "retrying with the same Idempotency-Key is safe" in stalled.json()["error"]["message"]
            retry = client.post("/jobs", json={"text": keyed}, headers={"Idempotency-Key": key})
            assert retry.status_code == 202 and retry.json()["created"] is False, retry.text
            # An attempt stuck in the connection handshake never sent the script, so the
            # keyless request may have queued nothing; none queues more than one entry.
            assert before + 1 <= db.xlen(STREAM) <= before + 2

            with WorkerProcess(tmp_path, triton, env, 4, "worker-s"):
                assert wait_done(db, [retry.json()["job_id"]], 30) == ["done"]
                deadline = time.monotonic() + 30
                while db.xlen(STREAM) and time.monotonic() < deadline:
                    time.sleep(0.2)
            runs = {keyed: 0, keyless: 0}
            for name in db.scan_iter("jobs:job:*"):
                result = db.hget(name, "result")
                text = json.loads(result)["input"] if result else None
                if text in runs:
                    runs[text] += 1
            assert runs[keyed] == 1 and runs[keyless] <= 1, runs
            assert int(db.hget(job_key(retry.json()["job_id"]), "attempts")) == 1
            assert db.xpending(STREAM, GROUP)["pending"] == 0 and db.xlen(STREAM) == 0
    finally:
        db.close()
        server.stop()
