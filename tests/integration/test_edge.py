"""The HTTP server's own limits on a real router process: oversized headers,
slow headers, slow bodies; the router stays healthy after each."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from devstack.processes import RouterProcess


@pytest.fixture(scope="module")
def router(triton, tmp_path_factory):
    with RouterProcess(tmp_path_factory.mktemp("edge-router"), triton, {
        "MAX_HEADER_BYTES": "8192", "HEADER_TIMEOUT_S": "1", "BODY_TIMEOUT_S": "1", "REQUEST_LOGGING": "false",
    }) as proc:
        yield proc


def exchange(router, chunks: list[bytes], pause: float = 0.0, timeout: float = 10.0) -> bytes:
    """Send raw bytes (pausing between chunks), then read until the server closes."""
    with socket.create_connection(("127.0.0.1", router.port), timeout=timeout) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
            time.sleep(pause)
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not part:
                break
            data += part
        return data


def error_of(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def assert_healthy(router):
    started = time.perf_counter()
    assert httpx.get(f"{router.url}/ping", timeout=5).status_code == 200
    assert time.perf_counter() - started < 1.0
    assert httpx.get(f"{router.url}/predict", params={"text": "still fine"}, timeout=10).status_code == 200


def test_headers_over_the_limit_are_431(router):
    request = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 32 * 1024 * 1024
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server may close before all 32 MiB are sent
        raw = sock.recv(65536)
    status, body = error_of(raw)
    assert status == 431 and body["error"]["code"] == "headers_too_large"
    assert body["error"]["message"] == "the request line and headers are larger than 8192 bytes"
    assert time.perf_counter() - started < 5
    assert_healthy(router)


def test_slow_headers_are_408(router):
    raw = exchange(router, [b"GET /ping HTTP/1.1\r\n", b"Host: x\r\n"], pause=0.7)
    status, body = error_of(raw)
    assert status == 408 and body["error"] == {"code": "request_timeout", "request_id": body["error"]["request_id"],
                                               "message": "the request headers were not received in time"}
    assert_healthy(router)


def test_an_idle_connection_is_closed(router):
    started = time.perf_counter()
    raw = exchange(router, [])
    assert error_of(raw)[0] == 408 and time.perf_counter() - started < 5


def test_a_slow_body_is_408(router):
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40\r\n\r\n")
    raw = exchange(router, [head, b'{"text": "sl'], pause=1.5)
    status, body = error_of(raw)
    assert status == 408 and body["error"]["message"] == "the request body was not received in time"
    assert_healthy(router)


def test_keep_alive_requests_are_not_cut(router):
    with httpx.Client(base_url=router.url, timeout=10) as http:
        for _ in range(3):
            assert http.get("/predict", params={"text": "keep"}).status_code == 200
            time.sleep(0.6)  # idle between requests, under uvicorn's keep-alive timeout


@pytest.mark.parametrize("headers", [
    b"X-Pad: " + b"0" * 60_000 + b"\r\n",                              # one big header, in one write
    b"".join(b"X-H%d: v\r\n" % n for n in range(3000)),                 # many small ones
])
def test_headers_over_the_limit_in_one_write_are_431(router, headers):
    raw = exchange(router, [b"GET /ping HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"])
    status, body = error_of(raw)
    assert status == 431 and body["error"]["code"] == "headers_too_large"
    assert_healthy(router)


def test_a_slow_second_request_on_a_kept_alive_connection_is_408(router):
    raw = exchange(router, [b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /ping HTTP/1.1\r\n"], pause=0.2)
    first, _, rest = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1 408" in rest and b"request_timeout" in rest


def test_malformed_http_gets_the_error_body(router):
    raw = exchange(router, [b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"])
    status, body = error_of(raw)
    assert status == 400 and body["error"]["code"] == "bad_request"
    assert_healthy(router)
