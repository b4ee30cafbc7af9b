"""The fast path answers exactly what FastAPI's routes answer: the same
requests, good and hostile, through an app with FAST_PATH on and one with it
off, give the same status, headers and body (request ids and timings aside)."""

from __future__ import annotations

import base64
import json

import pytest

from router.edge.fastpath import FastPath
from tests.router.edge.test_auth import KEYS

READER = {"X-API-Key": "k-reader"}
OPS = {"X-API-Key": "k-ops"}
TENSOR = {"inputs": [{"name": "text", "datatype": "UINT8", "shape": [1, 256], "data": [104] * 256}]}

CASES = [
    ("POST", "/predict", {"json": {"text": "great film"}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "great film", "top_k": 2, "model_version": "1"}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "great film"}, "headers": {**READER, "X-User-ID": "u-7"}}),
    ("POST", "/predict", {"json": {"text": "great film"}}),  # no key: 401
    ("POST", "/predict", {"json": {"text": "great film"}, "headers": OPS}),  # no predict scope: 403
    ("POST", "/predict", {"json": {"text": ""}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "x", "model": "nope"}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "x", "top_k": 0}, "headers": READER}),
    ("POST", "/predict", {"json": {"text": "x", "unknown": 1}, "headers": READER}),
    ("POST", "/predict", {"json": ["not", "an", "object"], "headers": READER}),
    ("POST", "/predict", {"content": b"{not json", "headers": {**READER, "content-type": "application/json"}}),
    ("POST", "/predict", {"content": b"[" * 200 + b"]" * 200,
                          "headers": {**READER, "content-type": "application/json"}}),
    ("POST", "/predict", {"content": b"text", "headers": {**READER, "content-type": "text/plain"}}),
    ("POST", "/predict", {"files": {"file": ("a.png", base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEAWk1v8QAAAABJRU5ErkJggg=="),
        "image/png")}, "data": {"model": "digits"}, "headers": READER}),
    ("POST", "/models/sentiment/predict", {"json": {"text": "fine"}, "headers": READER}),
    ("POST", "/models/unknown/predict", {"json": {"text": "fine"}, "headers": READER}),
    ("POST", "/v2/models/sentiment/infer", {"json": TENSOR, "headers": READER}),
    ("POST", "/v2/models/sentiment/versions/1/infer", {"json": TENSOR, "headers": READER}),
    ("POST", "/v2/models/sentiment/versions/9/infer", {"json": TENSOR, "headers": READER}),
    ("POST", "/v2/models/sentiment/infer", {"json": {"inputs": []}, "headers": READER}),
    ("POST", "/v2/models/sentiment/infer", {"json": TENSOR}),
    ("GET", "/predict", {"params": {"text": "fine"}, "headers": READER}),
    ("PUT", "/predict", {"json": {"text": "fine"}, "headers": READER}),
]


def comparable(response) -> tuple:
    headers = {k: v for k, v in response.headers.items() if k not in ("x-request-id", "content-length", "date")}
    try:
        body = response.json()
    except ValueError:
        return response.status_code, headers, response.content
    text = json.dumps(body).replace(response.headers.get("x-request-id", "-"), "<id>")
    body = json.loads(text)
    if isinstance(body, dict):
        body.pop("latency_ms", None)
    return response.status_code, headers, body


@pytest.mark.parametrize("method, path, kwargs", CASES, ids=[f"{m} {p} {i}" for i, (m, p, _) in enumerate(CASES)])
def test_the_fast_path_answers_what_fastapi_answers(app_client, method, path, kwargs):
    answers = []
    for fast in (True, False):
        with app_client(api_keys=KEYS, fast_path=fast) as client:
            served = [m for m in client.app.user_middleware if m.cls is FastPath]
            assert bool(served) == fast
            answers.append(comparable(client.request(method, path, **kwargs)))
    assert answers[0] == answers[1]


def test_the_fast_path_takes_the_four_hot_routes_and_leaves_fastapi_out(app_client, monkeypatch):
    import fastapi.routing

    solved = []
    real = fastapi.routing.solve_dependencies

    async def counting(*args, **kwargs):
        solved.append(kwargs.get("request").url.path if kwargs.get("request") else "?")
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    with app_client(api_keys=KEYS) as client:
        fast = client.app.middleware_stack
        while not isinstance(fast, FastPath):
            fast = fast.app
        assert sorted(route.path for _, route, *_ in fast.routes) == [
            "/models/{model}/predict", "/predict", "/v2/models/{model}/infer",
            "/v2/models/{model}/versions/{version}/infer"]
        assert client.post("/predict", json={"text": "fine"}, headers=READER).status_code == 200
        assert client.post("/v2/models/sentiment/infer", json=TENSOR, headers=READER).status_code == 200
        assert solved == []
        assert client.get("/predict", params={"text": "fine"}, headers=READER).status_code == 200
        assert solved == ["/predict"]
