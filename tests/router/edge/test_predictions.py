"""/predict, /models/{m}/predict and /predict/batch through the whole app,
over a FakeTriton: bodies, headers, versions, cache and single-flight."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np

from router.dataplane.catalog import ModelInfo
from router.dataplane.preprocess import text_tensor
from router.dataplane.routing import in_canary
from tests.router.fakes import triton_config

SENTIMENT = ModelInfo.from_config(triton_config("sentiment"))
BODY_KEYS = {"request_id", "model", "model_version", "input", "prediction", "confidence", "scores", "source",
             "cached", "latency_ms", "routed_by"}


def expect(fake, text: str, version: int, top_k: int = 1):
    return fake.expected("sentiment", version, text_tensor(text, SENTIMENT, 5000)[0], top_k)


def test_a_prediction_then_its_cache_hit(client, fake):
    first = client.get("/predict", params={"text": "I love this"})
    assert first.status_code == 200
    body = first.json()
    assert set(body) == BODY_KEYS
    (label, score), = expect(fake, "I love this", 2)
    assert (body["model"], body["model_version"], body["routed_by"]) == ("sentiment", 2, "default")
    assert (body["prediction"], body["confidence"], body["scores"]) == (label, score, {label: score})
    assert (body["source"], body["cached"], body["input"]) == ("model", False, "I love this")
    assert first.headers["x-model-version"] == "2" and first.headers["x-cache"] == "MISS"
    assert first.headers["x-request-id"] == body["request_id"] == fake.calls[0].request_id
    second = client.post("/predict", json={"input": "I love this"})
    assert second.status_code == 200 and second.headers["x-cache"] == "HIT"
    assert (second.json()["source"], second.json()["cached"]) == ("cache", True)
    assert second.json()["scores"] == body["scores"]
    assert len(fake.calls) == 1


def test_a_client_request_id_is_kept_and_sent_to_triton(client, fake):
    response = client.get("/predict", params={"text": "fine"}, headers={"X-Request-ID": "order-42.a:b"})
    assert response.headers["x-request-id"] == response.json()["request_id"] == "order-42.a:b"
    assert fake.calls[-1].request_id == "order-42.a:b"
    odd = client.get("/predict", params={"text": "fine too"}, headers={"X-Request-ID": "has space"})
    assert odd.json()["request_id"] != "has space" and len(odd.json()["request_id"]) == 32


def test_a_pinned_version_is_served_and_cached_apart(client, fake):
    v1 = client.post("/predict", json={"text": "same words", "model_version": "v1", "top_k": 2})
    assert v1.status_code == 200
    assert (v1.json()["model_version"], v1.json()["routed_by"], v1.headers["x-cache"]) == (1, "pinned", "MISS")
    assert list(v1.json()["scores"].items()) == expect(fake, "same words", 1, 2)
    v2 = client.post("/predict?model_version=2", json={"text": "same words", "top_k": 2})
    assert (v2.json()["model_version"], v2.json()["routed_by"], v2.headers["x-cache"]) == (2, "pinned", "MISS")
    again = client.get("/predict", params={"text": "same words", "model_version": "1", "top_k": 2})
    assert (again.json()["model_version"], again.headers["x-cache"]) == (1, "HIT")
    assert [(c.version, c.rows) for c in fake.calls] == [(1, 1), (2, 1)]


def test_top_k_is_part_of_the_cache_key(client, fake):
    one = client.get("/predict", params={"text": "top k"}).json()
    two = client.get("/predict", params={"text": "top k", "top_k": 2}).json()
    assert len(one["scores"]) == 1 and len(two["scores"]) == 2 and not two["cached"]


def test_the_canary_takes_its_buckets_and_stays_sticky(app_client, fake):
    with app_client(default_model_version=1, canary_version=2, canary_percent=50) as client:
        for user in ("alice", "bob", "carol", "dave", "erin", "frank"):
            want = (2, "canary") if in_canary(user, 50) else (1, "default")
            for text in ("one", "two"):
                body = client.get("/predict", params={"text": text}, headers={"X-User-ID": user}).json()
                assert (body["model_version"], body["routed_by"]) == want
        metrics = client.get("/metrics").text
        assert 'canary_assignments_total{model="sentiment",version="2"}' in metrics


def test_path_model_and_image_upload(client, fake):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.kron(np.eye(8, dtype=np.uint8) * 255, np.ones((4, 4), dtype=np.uint8))).save(buf, "PNG")
    upload = client.post("/models/digits/predict", files={"file": ("d.png", buf.getvalue(), "image/png")},
                         data={"top_k": "3"})
    assert upload.status_code == 200
    body = upload.json()
    assert (body["model"], body["model_version"], len(body["scores"])) == ("digits", 2, 3)
    assert "input" not in body
    as_b64 = client.post("/predict", json={"model": "digits", "image_b64": base64.b64encode(buf.getvalue()).decode(),
                                           "top_k": 3})
    assert as_b64.headers["x-cache"] == "HIT" and as_b64.json()["scores"] == body["scores"]


def test_a_batch_with_mixed_hits_and_misses(client, fake):
    for text in ("alpha", "gamma"):
        client.get("/predict", params={"text": text})
    calls_before = len(fake.calls)
    response = client.post("/predict/batch", json={"inputs": ["alpha", "beta", {"text": "gamma"}, {"input": "delta"}]},
                           headers={"X-Request-ID": "batch-1"})
    assert response.status_code == 200 and response.headers["x-cache"] == "MISS"
    body = response.json()
    assert set(body) == {"request_id", "results", "latency_ms"} and body["request_id"] == "batch-1"
    results = body["results"]
    assert [r["request_id"] for r in results] == ["batch-1-0", "batch-1-1", "batch-1-2", "batch-1-3"]
    assert [r["input"] for r in results] == ["alpha", "beta", "gamma", "delta"]
    assert [r["cached"] for r in results] == [True, False, True, False]
    for r in results:
        assert (r["prediction"], r["confidence"]) == expect(fake, r["input"], 2)[0]
    # the two misses went to Triton as one request of two rows
    assert [(c.rows, c.request_id) for c in fake.calls[calls_before:]] == [(2, "batch-1")]
    again = client.post("/predict/batch", json={"inputs": ["alpha", "beta", "gamma", "delta"]})
    assert again.headers["x-cache"] == "HIT" and all(r["cached"] for r in again.json()["results"])
    assert len(fake.calls) == calls_before + 1


def test_identical_concurrent_misses_make_one_triton_call(client, fake):
    """Twenty identical requests while Triton is slow: one inference, twenty answers."""
    fake.hold = True

    async def scenario():
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
            pending = [asyncio.ensure_future(http.get("/predict", params={"text": "the same"})) for _ in range(20)]
            while not fake.calls:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)  # let every request reach the flight
            fake.hold = False
            return await asyncio.gather(*pending)

    responses = client.portal.call(scenario)
    assert [r.status_code for r in responses] == [200] * 20
    assert len(fake.calls) == 1
    assert len({r.json()["prediction"] for r in responses}) == 1
    assert sum(r.headers["x-cache"] == "MISS" for r in responses) == 20  # joined flights are not cache hits
    assert 'singleflight_coalesced_total{model="sentiment"} 19.0' in client.get("/metrics").text


def test_a_failed_flight_is_not_remembered(client, fake):
    from router.errors import TritonFailed

    fake.failures[("sentiment", 2)] = TritonFailed("Triton could not run the request")
    assert client.get("/predict", params={"text": "flaky"}).status_code == 502
    del fake.failures[("sentiment", 2)]
    retry = client.get("/predict", params={"text": "flaky"})
    assert retry.status_code == 200 and retry.headers["x-cache"] == "MISS"


def test_a_foreign_or_broken_cache_entry_is_a_miss(client, fake):
    """Whatever else wrote into the cache, the router serves only a well-formed entry."""
    from router.dataplane.cache import cache_key

    cache = client.app.state.service.cache
    for n, junk in enumerate((b"[]", b"{}", b'[["x"]]', b"not json", b'"text"', b"[[1, 2, 3]]")):
        text = f"poisoned {n}"
        tensor = text_tensor(text, SENTIMENT, 5000)
        key = cache_key("pred", "sentiment", 2, tensor.tobytes(), tensor.shape[1:], str(tensor.dtype), "top_k=1")
        client.portal.call(cache.set, key, junk, 60)
        response = client.get("/predict", params={"text": text})
        assert response.status_code == 200 and response.headers["x-cache"] == "MISS", junk
        assert response.json()["prediction"] == expect(fake, text, 2)[0][0]


def test_a_raw_tensor_model_is_pointed_to_its_v2_route(app_client, fake):
    """A model whose config declares no input_kind (several inputs, any dtypes) is not for /predict."""
    config = {"name": "embedder", "max_batch_size": 64, "parameters": {},
              "input": [{"name": "input_ids", "data_type": "TYPE_INT64", "dims": ["-1"]},
                        {"name": "attention_mask", "data_type": "TYPE_INT64", "dims": ["-1"]}],
              "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": ["384"]}]}
    fake.configs["embedder"], fake.states["embedder"] = config, {1: "READY"}
    with app_client() as client:
        response = client.post("/predict", json={"model": "embedder", "text": "hello"})
        assert response.status_code == 422
        assert response.json()["error"]["message"] == ("model 'embedder' takes raw tensors, not text or an image: "
                                                       "use POST /v2/models/embedder/infer (the Open Inference Protocol)")
        view = client.get("/models").json()["models"]["embedder"]
        assert view["input_kind"] is None and view["labels"] == []
        assert view["inputs"] == [{"name": "input_ids", "datatype": "INT64", "shape": [-1]},
                                  {"name": "attention_mask", "datatype": "INT64", "shape": [-1]}]
        assert view["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [384]}]
