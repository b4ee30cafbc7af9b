"""/jobs through the app (a FakeTriton, a real redis-server): the error bodies
and headers of refused submits, and jobs read only by their owner."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from router import context
from router.edge.app import create_app
from router.edge.deps import get_record
from router.jobs.store import STREAM
from tests.conftest import free_port
from tests.router.fakes import FakeTriton
from tests.router.jobs.conftest import settings_for


@pytest.fixture
def jobs_app(jobs_redis, db):
    """`with jobs_app(**settings) as (client, app):` the app's lifespan runs around the block."""

    @contextmanager
    def make(url=None, **overrides):
        app = create_app(settings_for(url or jobs_redis.url, **overrides), gateway=FakeTriton())
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, app
    return make


def as_owner(app, name):
    async def record():
        current = context.current()
        current.key_name = name
        return current
    app.dependency_overrides[get_record] = record


def assert_error(resp, status, code):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["code"] == code and body["error"]["request_id"] == resp.headers["x-request-id"]
    return body["error"]["message"]


def test_same_key_other_body_is_422(jobs_app, db):
    with jobs_app() as (client, _):
        first = client.post("/jobs", json={"text": "one"}, headers={"Idempotency-Key": "k-1"})
        same = client.post("/jobs", json={"text": "one", "model_version": None}, headers={"Idempotency-Key": "k-1"})
        other = client.post("/jobs", json={"text": "two"}, headers={"Idempotency-Key": "k-1"})
        bigger = client.post("/jobs", json={"text": "one", "top_k": 2}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == same.status_code == 202
    assert same.json() == {**first.json(), "created": False}
    for resp in (other, bigger):
        message = assert_error(resp, 422, "idempotency_key_reused")
        assert message == ("this Idempotency-Key was already used with a different request body; "
                           "use a new key for a new request")
    assert db.xlen(STREAM) == 1


def test_a_job_is_not_found_for_another_owner(jobs_app):
    with jobs_app() as (client, app):
        anon = client.post("/jobs", json={"text": "mine"}).json()["job_id"]
        anon_keyed = client.post("/jobs", json={"text": "mine"}, headers={"Idempotency-Key": "shared"}).json()
        as_owner(app, "alice")
        alice = client.post("/jobs", json={"text": "mine"}).json()["job_id"]
        alice_keyed = client.post("/jobs", json={"text": "other"}, headers={"Idempotency-Key": "shared"})
        assert client.get(f"/jobs/{alice}").status_code == 200
        foreign = client.get(f"/jobs/{anon}")
        as_owner(app, None)
        assert client.get(f"/jobs/{anon}").status_code == 200
        stolen = client.get(f"/jobs/{alice}")
        unknown = client.get("/jobs/" + "0" * 32)
    assert alice_keyed.status_code == 202 and alice_keyed.json()["created"] is True
    assert alice_keyed.json()["job_id"] != anon_keyed["job_id"], "keys are scoped per owner"
    for resp, job_id in ((foreign, anon), (stolen, alice), (unknown, "0" * 32)):
        assert assert_error(resp, 404, "not_found") == f"unknown job {job_id!r} (or its result expired)"


def test_unreachable_queue_is_503_with_retry_after(jobs_app, db):
    with jobs_app(url=f"redis://127.0.0.1:{free_port()}/0", jobs_redis_timeout_s=2) as (client, _):
        submit = client.post("/jobs", json={"text": "x"})
        status = client.get("/jobs/" + "a" * 32)
    assert assert_error(submit, 503, "jobs_unavailable") == "the job queue is unreachable; nothing was queued"
    assert assert_error(status, 503, "jobs_unavailable") == "the job store is unreachable"
    assert submit.headers["retry-after"] == status.headers["retry-after"] == "2"


def test_full_queue_is_503_jobs_busy(jobs_app, db):
    with jobs_app(jobs_max_queued=1) as (client, _):
        first = client.post("/jobs", json={"text": "a"}, headers={"Idempotency-Key": "a"})
        full = client.post("/jobs", json={"text": "b"})
        replay = client.post("/jobs", json={"text": "a"}, headers={"Idempotency-Key": "a"})
    assert first.status_code == 202 and replay.status_code == 202 and replay.json()["created"] is False
    message = assert_error(full, 503, "jobs_busy")
    assert message == "the job queue is full (limit: 1 jobs waiting or running); nothing was queued"
    assert full.headers["retry-after"]
    assert db.xlen(STREAM) == 1


def test_anonymous_jobs_belong_to_the_client_address(jobs_app):
    """Without a key, one address cannot read another's job or collide with its Idempotency-Key."""
    import httpx

    with jobs_app() as (client, app):
        async def scenario():
            def at(host):
                return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 1234)),
                                         base_url="http://router")
            async with at("10.0.0.1") as a, at("10.0.0.2") as b:
                job = (await a.post("/jobs", json={"text": "mine"}, headers={"Idempotency-Key": "k"})).json()
                theirs = await b.get(f"/jobs/{job['job_id']}")
                own = await a.get(f"/jobs/{job['job_id']}")
                same_key = await b.post("/jobs", json={"text": "another"}, headers={"Idempotency-Key": "k"})
                return job, theirs, own, same_key

        job, theirs, own, same_key = client.portal.call(scenario)
    assert own.status_code == 200
    assert assert_error(theirs, 404, "not_found") == f"unknown job {job['job_id']!r} (or its result expired)"
    assert same_key.status_code == 202 and same_key.json()["job_id"] != job["job_id"]
