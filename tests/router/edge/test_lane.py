"""The lane answers inside the HTTP protocol exactly what the full path
answers: a real uvicorn server with the router's protocol, on a free
loopback port, over a FakeTriton, with FAST_PATH on (lane and fast path)
and off (neither), sent the same requests in the same order."""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import tritonclient.http as httpclient
import uvicorn

from router.edge import server as edge_server
from router.edge.app import create_app
from router.edge.lane import Pending
from router.errors import TritonUnavailable
from router.settings import Settings
from tests.router.edge.test_auth import KEYS
from tests.router.edge.test_fastpath import CASES, READER, TENSOR, comparable
from tests.router.edge.test_v2 import encode, tensor, text_row
from tests.router.fakes import FakeTriton

SLOW = {"X-API-Key": "k-slow"}  # 3/minute


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(**overrides):
    """(base url, app) of a real server in a thread, stopped after the block."""
    settings = Settings(_env_file=None, **{"request_logging": False, "triton_refresh_s": 60, "redis_url": None,
                                              "jobs_redis_url": None, "api_keys": KEYS, **overrides})
    app = create_app(settings, gateway=FakeTriton())
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=edge_server.configure(settings), log_config=None,
                            access_log=False, ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(20)


def timeless(response) -> tuple:
    """`comparable`, without the seconds a 429 says to wait (they tick between two runs)."""
    status, headers, body = comparable(response)
    if status == 429 and isinstance(body["error"], dict):
        body["error"]["message"] = re.sub(r"retry after \d+ s", "retry after N s", body["error"]["message"])
    elif status == 429:  # the Open Inference Protocol's shape
        body["error"] = re.sub(r"retry after \d+ s", "retry after N s", body["error"])
    return status, {k: v for k, v in headers.items() if k not in ("retry-after", "ratelimit-reset")}, body


def answers_of(requests, **overrides) -> list:
    """Each request sent twice (the second may be a cache hit), comparable answers in order."""
    out = []
    with served(**overrides) as (url, _), httpx.Client(base_url=url, timeout=10) as client:
        for method, path, kwargs in requests:
            for _ in range(2):
                out.append(timeless(client.request(method, path, **kwargs)))
        metrics = client.get("/metrics", headers={"X-API-Key": "k-ops"}).text.splitlines()
    # what every request counted: outcomes by route and status, cache lookups, canary and fallback counts
    out.append(sorted(line for line in metrics if line.startswith((
        "router_requests_total{", "cache_hits_total{", "cache_miss_total{", "cache_tier_hits_total{",
        "router_request_duration_seconds_count{", "fallbacks_total{", "canary_assignments_total{"))))
    return out


HITS = [
    ("POST", "/predict", {"json": {"text": "a film to remember"}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "a film to remember", "top_k": 2}, "headers": READER}),
    ("POST", "/predict", {"json": {"input": "a film to remember", "model_version": 1}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "a film to remember"}, "headers": {**READER, "X-Request-ID": "mine-1"}}),
    ("POST", "/predict", {"json": {"text": "a film to remember"},
                          "headers": {**READER, "content-type": "application/vnd.x+json"}}),
    ("POST", "/predict", {"json": {"text": "a film to remember", "model": "digits"}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "a film to remember", "extra": 1}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "   "}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "a film to remember", "top_k": 99}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "a film to remember"}, "params": {"top_k": 2}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "a film to remember"}, "headers": {"X-API-Key": "wrong"}}),
    ("POST", "/predict", {"json": {"text": "a film to remember"},
                          "headers": {**READER, "Authorization": "Basic abc"}}),
    ("POST", "/models/sentiment/predict", {"json": {"text": "a film to remember"}, "headers": READER}),
    ("POST", "/models/digits/predict", {"json": {"text": "a film to remember"}, "headers": READER}),
    *[("POST", "/predict", {"json": {"text": "slowly now"}, "headers": SLOW})] * 3,
    *[("POST", "/v2/models/sentiment/infer", {"content": body, "headers": {**READER, **extra}})
      for body, extra in (encode([tensor("text", text_row("a tensor to remember"), "UINT8")], [out])
                          for out in (httpclient.InferRequestedOutput("probabilities", binary_data=True),
                                      httpclient.InferRequestedOutput("probabilities", binary_data=False,
                                                                      class_count=2)))],
    ("POST", "/v2/models/sentiment/versions/2/infer", {"json": TENSOR, "headers": READER}),
    ("POST", "/v2/models/sentiment/infer", {"json": TENSOR, "headers": {**READER, "X-User-ID": "u-1"}}),
    ("POST", "/v2/models/sentiment/infer", {"content": gzip.compress(json.dumps(TENSOR).encode()),
                                            "headers": {**READER, "content-encoding": "gzip"}}),
    ("POST", "/v2/models/sentiment/infer", {"json": {**TENSOR, "outputs": [{"name": "nope"}]}, "headers": READER}),
    ("POST", "/v2/models/digits/infer", {"json": TENSOR, "headers": READER}),
    *[("POST", "/v2/models/sentiment/infer", {"json": TENSOR, "headers": SLOW})] * 2,
]


@pytest.mark.parametrize("rate_limit", ["1000/second", None], ids=["limited", "unlimited"])
def test_the_lane_answers_what_the_full_path_answers(rate_limit):
    requests = [*HITS, *CASES]
    lane = answers_of(requests, fast_path=True, rate_limit=rate_limit)
    full = answers_of(requests, fast_path=False, rate_limit=rate_limit)
    for request, mine, theirs in zip([r for r in requests for _ in range(2)] + ["/metrics"], lane, full):
        assert mine == theirs, request
    assert any(line.startswith('cache_hits_total{model="sentiment"') for line in lane[-1])
    slow = [status for (status, *_), (_, _, kwargs) in zip(lane, [r for r in requests for _ in range(2)])
            if kwargs.get("headers") is SLOW]
    assert slow == [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]  # 3/minute, counted once on either path


def lane_results(app) -> list:
    """What the app's lane answered, in order: an answer; "later" (after the
    dataplane); "counting" (a rate limit first); None (it handed the request on)."""
    lane, seen = app.state.lane, []
    real = lane.answer

    def answer(*args, **kwargs):
        result = real(*args, **kwargs)
        seen.append(result if result is None or isinstance(result, tuple) else
                    "later" if isinstance(result, Pending) else "counting")
        return result
    lane.answer = answer
    return seen


def test_hits_are_answered_in_the_callback_and_misses_after_the_dataplane():
    with served(rate_limit=None) as (url, app), httpx.Client(base_url=url, timeout=10) as client:
        seen = lane_results(app)
        body = {"text": "only once to Triton"}
        first = client.post("/predict", json=body, headers=READER)
        second = client.post("/predict", json=body, headers={**READER, "X-Request-ID": "hit-1"})
        third = client.post("/predict", json=body, headers=READER, params={"top_k": 1})  # a query: not the lane's
        calls = len(app.state.gateway.calls)
    assert [r.headers["x-cache"] for r in (first, second, third)] == ["MISS", "HIT", "HIT"]
    assert seen[0] == "later" and seen[1][1] == 200 and len(seen) == 2
    assert second.headers["x-request-id"] == "hit-1" and second.json()["request_id"] == "hit-1"
    assert second.json()["source"] == "cache" and calls == 1


def test_open_inference_protocol_hits_are_answered_by_the_lane():
    inputs = [tensor("text", text_row("a tensor for the lane"), "UINT8")]
    binary, extra = encode(inputs, [httpclient.InferRequestedOutput("probabilities", binary_data=True)])
    plain = json.dumps({"inputs": [{"name": "text", "datatype": "UINT8", "shape": [1, 256],
                                    "data": text_row("a tensor for the lane").ravel().tolist()}],
                        "outputs": [{"name": "probabilities"}]}).encode()
    with served(rate_limit=None) as (url, app), httpx.Client(base_url=url, timeout=10) as client:
        seen = lane_results(app)
        first = client.post("/v2/models/sentiment/infer", content=binary, headers={**READER, **extra})
        second = client.post("/v2/models/sentiment/infer", content=binary,
                             headers={**READER, **extra, "X-Request-ID": "v2-hit"})
        as_json = client.post("/v2/models/sentiment/infer", content=plain, headers=READER)  # the same entry
        pinned = client.post(f"/v2/models/sentiment/versions/{second.headers['x-model-version']}/infer",
                             content=plain, headers=READER)
        calls = len(app.state.gateway.calls)
    assert [r.headers["x-cache"] for r in (first, second, as_json, pinned)] == ["MISS", "HIT", "HIT", "HIT"]
    assert seen[0] == "later" and [s[1] for s in seen[1:]] == [200, 200, 200] and calls == 1
    assert second.headers["x-request-id"] == "v2-hit" and second.content == first.content
    assert second.headers["inference-header-content-length"] == first.headers["inference-header-content-length"]
    assert as_json.headers["content-type"] == "application/json" and pinned.headers["x-routed-by"] == "pinned"
    assert json.loads(as_json.content)["outputs"][0]["name"] == "probabilities"


def test_a_limited_hit_is_counted_by_the_lane_and_refused_with_the_same_429():
    with served() as (url, app), httpx.Client(base_url=url, timeout=10) as client:
        seen = lane_results(app)
        answers = [client.post("/predict", json={"text": "slow hits"}, headers=SLOW) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert seen == ["counting", "later", "counting", seen[3], "counting", seen[5], "counting"]  # 2nd pass: counted
    assert seen[3][1] == 200 and seen[5][1] == 200
    refused = answers[3]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["request_id"] == refused.headers["x-request-id"]
    assert refused.headers["retry-after"] and refused.headers["ratelimit-limit"] == "3"


def raw_exchange(url: str, data: bytes, responses: int) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        got = b""
        while got.count(b"HTTP/1.") < responses or not got.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def request_bytes(body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST /predict HTTP/" + version + b"\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"x-api-key: k-reader\r\ncontent-length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body)


def test_pipelined_and_http10_requests_are_answered_in_order():
    body = b'{"text": "pipelined"}'
    with served(rate_limit=None) as (url, app):
        seen = lane_results(app)
        warm = raw_exchange(url, request_bytes(body), 1)
        both = raw_exchange(url, request_bytes(body) + request_bytes(b'{"text": "pipelined too"}'), 2)
        misses = raw_exchange(url, request_bytes(b'{"text": "slow one"}') + request_bytes(b'{"text": "next one"}'), 2)
        closed = raw_exchange(url, request_bytes(body, version=b"1.0"), 1)
    assert b"x-cache: MISS" in warm
    first, second = both.split(b"HTTP/1.1 200 OK")[1:]
    assert b"x-cache: HIT" in first and b'"input":"pipelined"' in first
    assert b"x-cache: MISS" in second and b'"input":"pipelined too"' in second
    first, second = misses.split(b"HTTP/1.1 200 OK")[1:]
    assert b'"input":"slow one"' in first and b'"input":"next one"' in second
    assert b"x-cache: HIT" in closed and b"connection: close" in closed
    # A request that arrives while the one before it waits for the dataplane waits its turn and
    # goes to the app; one after a hit (already answered) is the lane's.
    assert [r if isinstance(r, str) else r[1] for r in seen] == ["later", 200, "later", "later", 200]


def test_a_body_sent_in_pieces_and_one_over_the_lanes_size_still_get_their_answers():
    text = "pieces"
    body = ('{"text": "%s"}' % text).encode()
    with served(rate_limit=None, max_body_bytes=1 << 20) as (url, app):
        host, port = url.removeprefix("http://").split(":")
        raw_exchange(url, request_bytes(body), 1)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            data = request_bytes(body)
            for i in range(0, len(data), 7):
                sock.sendall(data[i:i + 7])
                time.sleep(0.005)
            reply = sock.recv(65536)
        seen = lane_results(app)
        large = [httpx.post(f"{url}/predict", headers=READER, json={"text": "x", "padding": "y" * (70 * 1024)},
                            timeout=10) for _ in range(2)]
    assert b"x-cache: HIT" in reply
    assert [(r.status_code, r.headers["x-cache"]) for r in large] == [(200, "MISS"), (200, "HIT")]
    assert seen == []  # larger than the lane holds: the full path answered both


def failing_answers(fast_path: bool, failure) -> list:
    """Misses while every version of sentiment fails with `failure` (a domain error, or a bug)."""
    with served(rate_limit=None, fast_path=fast_path) as (url, app), httpx.Client(base_url=url, timeout=10) as client:
        for version in (1, 2):
            app.state.gateway.failures[("sentiment", version)] = failure
        out = [timeless(client.post("/predict", json={"text": "failing"}, headers=READER)),
               timeless(client.post("/v2/models/sentiment/infer", json=TENSOR, headers=READER))]
        metrics = client.get("/metrics", headers={"X-API-Key": "k-ops"}).text.splitlines()
    return out + [sorted(line for line in metrics if line.startswith("router_requests_total{"))]


@pytest.mark.parametrize("failure", [TritonUnavailable("Triton is unreachable"), RuntimeError("a bug")],
                         ids=["domain error", "bug"])
def test_a_miss_that_fails_gets_the_full_paths_error(failure):
    lane, full = failing_answers(True, failure), failing_answers(False, failure)
    assert lane == full
    statuses = [status for status, *_ in lane[:2]]
    assert statuses == ([503, 503] if isinstance(failure, TritonUnavailable) else [500, 500])


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_client_gone_during_a_lane_miss_is_recorded_and_nothing_is_left_behind():
    with served(rate_limit=None) as (url, app), httpx.Client(base_url=url, timeout=10) as client:
        gateway, edge = app.state.gateway, app.state.edge
        gateway.hold = True
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(request_bytes(b'{"text": "left before the answer"}'))
            wait_for(lambda: len(gateway.calls) == 1 and edge.in_flight == 1)
        gateway.hold = False
        wait_for(lambda: edge.in_flight == 0)
        again = client.post("/predict", json={"text": "left before the answer"}, headers=READER)
        metrics = client.get("/metrics", headers={"X-API-Key": "k-ops"}).text
    # the answer was found and cached although nobody was there to read it; the request was counted
    assert again.status_code == 200 and again.headers["x-cache"] == "HIT" and len(gateway.calls) == 1
    assert 'router_requests_total{model="sentiment",route="/predict",status="200",version="' in metrics


def test_the_in_flight_cap_counts_lane_misses():
    with served(rate_limit=None, max_in_flight=1) as (url, app), httpx.Client(base_url=url, timeout=10) as client:
        gateway = app.state.gateway
        gateway.hold = True
        result: dict = {}
        waiting = threading.Thread(target=lambda: result.update(first=client.post(
            "/predict", json={"text": "holding the only slot"}, headers=READER)))
        waiting.start()
        wait_for(lambda: len(gateway.calls) == 1)
        refused = client.post("/predict", json={"text": "one too many"}, headers=READER)
        gateway.hold = False
        waiting.join(10)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["retry-after"] == "1" and result["first"].status_code == 200


def test_a_v2_body_seen_before_is_not_parsed_again_and_its_tensors_cannot_change():
    body, extra = encode([tensor("text", text_row("parsed once"), "UINT8")],
                         [httpclient.InferRequestedOutput("probabilities", binary_data=False)])
    headers = {**READER, **extra}
    with served() as (url, app), httpx.Client(base_url=url, timeout=10) as client:
        memo = app.state.lane.parsed
        first = client.post("/v2/models/sentiment/infer", content=body, headers=headers)
        [(key, (_, parsed, _))] = memo._data.items()
        second = client.post("/v2/models/sentiment/infer", content=body, headers=headers)
        assert len(memo) == 1 and memo._data[key][1] is parsed  # the same parse served both
        assert [t.array.flags.writeable for t in parsed.inputs] == [False]
        bad = client.post("/v2/models/sentiment/infer", content=b'{"inputs": [', headers=READER)
        assert len(memo) == 1  # a body that does not parse is refused as before, and not kept
        # nor one whose parse could outweigh its body: request parameters, BYTES elements
        with_parameters = client.post("/v2/models/sentiment/infer", json={**TENSOR, "parameters": {"p": [[]] * 50}},
                                      headers=READER)
        strings = client.post("/v2/models/sentiment/infer", headers=READER, json={
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 4], "data": ["a", "b", "c", "d"]}]})
        assert (with_parameters.status_code, strings.status_code, len(memo)) == (200, 400, 1)
    assert first.status_code == second.status_code == 200 and bad.status_code == 400
    assert first.json()["outputs"] == second.json()["outputs"]
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    with served(parse_memo_mb=0) as (url, app), httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(2):
            assert client.post("/v2/models/sentiment/infer", content=body, headers=headers).status_code == 200
        assert len(app.state.lane.parsed) == 0


def test_a_predict_body_seen_before_keeps_its_item_and_every_request_is_still_routed_on_its_own():
    body = json.dumps({"text": "routed on its own"}).encode()
    headers = {**READER, "content-type": "application/json"}

    def versions(**overrides) -> tuple[list, object]:
        with served(canary_version=1, canary_percent=50, **overrides) as (url, app), \
                httpx.Client(base_url=url, timeout=10) as client:
            out = []
            for path in ("/predict", "/models/sentiment/predict", "/models/digits/predict"):
                for user in range(12):
                    r = client.post(path, content=body, headers={**headers, "X-User-ID": f"u{user}"})
                    out.append((r.status_code, r.headers.get("x-model-version"), r.json().get("model"),
                                r.json().get("scores")))
            return out, app.state.lane
    lane_answers, lane = versions()
    full_answers, _ = versions(fast_path=False)
    assert lane_answers == full_answers  # each user's own version, each path's own model
    assert {v for status, v, _, _ in lane_answers if status == 200} == {"1", "2"}
    assert {status for status, _, model, _ in lane_answers[24:]} == {422}  # digits takes images: refused each time
    [(key, (_, (_, item), _))] = [entry for entry in lane.parsed._data.items() if entry[0][0] == "predict"]
    assert key == ("predict", body) and item.text == "routed on its own"
    assert {(model, version) for model, version, _ in item.derived} == {("sentiment", 1), ("sentiment", 2)}
