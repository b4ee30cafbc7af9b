"""Every error status and its exact body: `{"error": {"code", "message",
"request_id"}}`, with the request id of the X-Request-ID header."""

from __future__ import annotations

import pytest

from router.errors import BadRequest, TritonFailed, TritonTimeout
from tests.router.edge.bad_inputs import BAD_INPUTS, expected


def assert_error(response, status: int, code: str, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": {"code": code, "message": message,
                                         "request_id": response.headers["x-request-id"]}}


@pytest.mark.parametrize("send,status,code,message", BAD_INPUTS)
def test_bad_input_gets_a_clear_error(client, fake, send, status, code, message):
    assert_error(send(client), status, code, expected(message, list(fake.configs)))
    assert fake.calls == []  # refused before Triton


@pytest.mark.parametrize("failure,status,code,message", [
    (TritonTimeout("Triton did not answer in time"), 504, "triton_timeout", "Triton did not answer in time"),
    (TritonFailed("Triton could not run the request"), 502, "triton_error", "Triton could not run the request"),
    (BadRequest("Triton rejected the input: bad shape"), 400, "bad_request", "Triton rejected the input: bad shape"),
    (RuntimeError("a bug"), 500, "internal_error", "internal error; see the router log for this request id"),
])
def test_triton_failures_get_their_status(client, fake, failure, status, code, message):
    fake.failures[("sentiment", 2)] = failure
    assert_error(client.get("/predict", params={"text": "x"}), status, code, message)
    del fake.failures[("sentiment", 2)]
    assert client.get("/predict", params={"text": "x"}).status_code == 200  # no error was cached


def test_triton_down_is_503_and_not_ready(app_client, fake):
    with app_client(triton_refresh_s=0.05) as client:
        fake.up = False
        assert_error(client.get("/predict", params={"text": "x"}), 503, "triton_unavailable", "Triton is unreachable")
        client.portal.call(client.app.state.service.catalog.refresh)
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["triton"] is False
        assert client.get("/health").json() == {"status": "ok", "model_loaded": False, "triton": "unreachable",
                                                "redis": "disabled", "auth": "off"}
        fake.up = True
        client.portal.call(client.app.state.service.catalog.refresh)
        assert client.get("/ready").status_code == 200
        assert client.get("/predict", params={"text": "x"}).status_code == 200


def test_wrong_method_and_missing_jobs_store(client):
    assert_error(client.delete("/predict"), 405, "method_not_allowed", "Method Not Allowed")
    assert_error(client.post("/jobs", json={"text": "x"}), 503, "jobs_unavailable",
                 "asynchronous jobs need Redis: set REDIS_URL (or JOBS_REDIS_URL)")
    assert_error(client.get("/jobs/" + "a" * 32), 503, "jobs_unavailable",
                 "asynchronous jobs need Redis: set REDIS_URL (or JOBS_REDIS_URL)")


def test_a_body_over_the_limit_is_refused_while_it_streams(client):
    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    assert_error(client.post("/predict", content=chunks(), headers={"content-type": "application/json"}),
                 413, "payload_too_large", "request body is larger than 1048576 bytes")
