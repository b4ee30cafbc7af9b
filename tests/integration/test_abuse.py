"""A careless or hostile client against a real router with API keys, two
replicas sharing Redis: each abuse gets its documented 4xx in the one error
body, and the router stays healthy after each."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from PIL import Image

from devstack.processes import RouterProcess
from router import keys
from tests.router.dataplane.test_preprocess import encode, jpeg_declaring, malformed, png

ALICE, BOB, BURST = keys.new_key(), keys.new_key(), keys.new_key()
ENTRIES = [keys.entry("alice", ALICE, ["predict", "jobs"], None), keys.entry("bob", BOB, ["predict", "jobs"], None),
           keys.entry("burst", BURST, ["predict"], "20/hour")]


@pytest.fixture(scope="module")
def routers(triton, redis_server, tmp_path_factory):
    env = {"API_KEYS": json.dumps(ENTRIES), "REDIS_URL": redis_server.url, "TRITON_REFRESH_S": "0.5",
           "MODEL_ROUTES": '{"digits": {"default_version": 2}}'}
    workdir = tmp_path_factory.mktemp("abuse")
    with RouterProcess(workdir / "a", triton, env) as a, RouterProcess(workdir / "b", triton, env) as b:
        yield a, b


@pytest.fixture
def http(routers):
    with httpx.Client(base_url=routers[0].url, timeout=30, headers={"X-API-Key": ALICE}) as client:
        yield client


def assert_error(response, status: int, code: str, message: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code and body["request_id"] == response.headers["x-request-id"]
    if message is not None:
        assert body["message"] == message


def assert_healthy(router) -> None:
    started = time.perf_counter()
    assert httpx.get(f"{router.url}/ping", timeout=5).status_code == 200
    assert time.perf_counter() - started < 0.5
    ok = httpx.get(f"{router.url}/predict", params={"text": "still here"}, headers={"X-API-Key": ALICE}, timeout=10)
    assert ok.status_code == 200


def image_body(raw: bytes) -> dict:
    return {"model": "digits", "image_b64": base64.b64encode(raw).decode()}


@pytest.mark.parametrize("raw,status,code", [
    (png(16384, 1), 422, "invalid_input"),            # a 96-byte thin image: refused by aspect, nothing allocated
    (png(16_777_216, 1), 422, "invalid_input"),       # it once asked for a pebibyte
    (encode(Image.new("L", (5000, 4000), 255)), 413, "payload_too_large"),
    (jpeg_declaring(encode(Image.new("L", (8, 8)), "JPEG"), 65000, 65000), 413, "payload_too_large"),
])
def test_image_bombs_and_thin_images(http, routers, raw, status, code):
    started = time.perf_counter()
    assert_error(http.post("/predict", json=image_body(raw)), status, code)
    assert time.perf_counter() - started < 2
    assert_healthy(routers[0])


@pytest.mark.parametrize("name", sorted(malformed()))
def test_malformed_image_files(http, routers, name):
    assert_error(http.post("/predict", json=image_body(malformed()[name])), 422, "invalid_input",
                 "the file is not an image that can be decoded")


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/jobs"])
@pytest.mark.parametrize("raw,message", [
    (b'{"text": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "the JSON body is nested deeper than 32 levels"),
    (b'{"text": "\\ud800", "inputs": ["\\ud800"]}', "the request body is not valid JSON"),
])
def test_deep_json_and_lone_surrogates(http, routers, path, raw, message):
    response = http.post(path, content=raw, headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_request", message)
    assert_healthy(routers[0])


def test_a_burst_over_the_rate_limit_is_shared_by_the_replicas(routers):
    statuses = []
    for n in range(30):  # alternating between the two replicas: one limit for the key
        router = routers[n % 2]
        response = httpx.get(f"{router.url}/predict", params={"text": f"burst {n}"}, headers={"X-API-Key": BURST},
                             timeout=10)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert_error(response, 429, "rate_limited")
            assert int(response.headers["retry-after"]) >= 1 and response.headers["ratelimit-limit"] == "20"
    assert statuses.count(200) == 20 and statuses.count(429) == 10
    assert_healthy(routers[0])


def test_another_keys_job_and_a_reused_idempotency_key(routers):
    a, b = routers
    submitted = httpx.post(f"{a.url}/jobs", json={"text": "mine"}, timeout=10,
                           headers={"X-API-Key": ALICE, "Idempotency-Key": "order-1"})
    assert submitted.status_code == 202
    job = submitted.json()["job_id"]
    mine = httpx.get(f"{b.url}/jobs/{job}", headers={"X-API-Key": ALICE}, timeout=10)
    assert mine.status_code == 200
    theirs = httpx.get(f"{b.url}/jobs/{job}", headers={"X-API-Key": BOB}, timeout=10)
    assert_error(theirs, 404, "not_found", f"unknown job {job!r} (or its result expired)")
    other_body = httpx.post(f"{b.url}/jobs", json={"text": "not the same"}, timeout=10,
                            headers={"X-API-Key": ALICE, "Idempotency-Key": "order-1"})
    assert_error(other_body, 422, "idempotency_key_reused")
    bobs_own = httpx.post(f"{b.url}/jobs", json={"text": "not the same"}, timeout=10,
                          headers={"X-API-Key": BOB, "Idempotency-Key": "order-1"})
    assert bobs_own.status_code == 202 and bobs_own.json()["job_id"] != job  # keys are per API key
    assert_healthy(a)


def test_no_key_an_unknown_key_and_a_missing_scope(routers):
    a = routers[0]
    assert_error(httpx.get(f"{a.url}/predict", params={"text": "x"}), 401, "unauthorized")
    assert_error(httpx.get(f"{a.url}/predict", params={"text": "x"}, headers={"X-API-Key": "rk_guess"}), 401,
                 "unauthorized", "unknown API key")
    assert_error(httpx.post(f"{a.url}/jobs", json={"text": "x"}, headers={"X-API-Key": BURST}), 403, "forbidden")
    assert httpx.get(f"{a.url}/health").json()["auth"] == "on"
