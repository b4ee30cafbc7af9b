"""The Open Inference Protocol (KServe v2) at the router, through the whole app
over a FakeTriton: requests built and responses read by tritonclient.http's
own code, so what passes here is what an unmodified client sends and reads."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.http._utils import _get_inference_request

from router import keys
from router.dataplane.routing import in_canary
from router.errors import TritonFailed, VersionUnavailable

LABELS = ["negative", "positive"]
# A model with two inputs, one of them BYTES, and no labels (raw tensors, like an embedder).
ECHO = {"name": "echo", "platform": "onnxruntime_onnx", "max_batch_size": 8, "parameters": {},
        "input": [{"name": "ids", "data_type": "TYPE_INT64", "dims": ["-1"]},
                  {"name": "note", "data_type": "TYPE_STRING", "dims": ["1"]}],
        "output": [{"name": "vector", "data_type": "TYPE_FP32", "dims": ["3"]}]}


@pytest.fixture
def fake(fake):
    fake.configs["echo"], fake.states["echo"] = ECHO, {1: "READY", 2: "READY"}
    return fake


def text_row(text: str = "I love this") -> np.ndarray:
    row = np.zeros((1, 256), dtype=np.uint8)
    raw = text.encode()
    row[0, :len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return row


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> httpclient.InferInput:
    inp = httpclient.InferInput(name, list(array.shape), datatype)
    return inp.set_data_from_numpy(array, binary_data=binary)


def encode(inputs, outputs=None, request_id: str = "") -> tuple[bytes, dict]:
    """The body and headers tritonclient.http sends."""
    body, size = _get_inference_request(inputs, request_id, outputs, 0, False, False, 0, None, None)
    return body, {} if size is None else {"Inference-Header-Content-Length": str(size)}


def post(client, model: str, inputs, outputs=None, version: str = "", headers=None, request_id: str = ""):
    body, extra = encode(inputs, outputs, request_id)
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return client.post(path, content=body, headers={**extra, **(headers or {})})


def result(response) -> httpclient.InferResult:
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    return httpclient.InferResult.from_response_body(response.content, header_length=None if length is None
                                                     else int(length))


def sentiment(client, text="I love this", binary=True, class_count=0, **kw):
    out = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=class_count)
    return post(client, "sentiment", [tensor("text", text_row(text), "UINT8", binary)], [out], **kw)


def probabilities(fake, text="I love this", version=2) -> np.ndarray:
    return np.array([fake.scores(text_row(text)[0], version, LABELS)], dtype=np.float32)


def assert_protocol_error(response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": message}
    assert response.headers["x-request-id"]


def test_json_then_binary_share_one_cache_entry(client, fake):
    first = sentiment(client, binary=False, request_id="client-id-7", headers={"X-Request-ID": "rid-1"})
    assert "inference-header-content-length" not in first.headers
    body = first.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("client-id-7", "sentiment", "2")
    np.testing.assert_array_equal(result(first).as_numpy("probabilities"), probabilities(fake))
    assert (first.headers["x-model-version"], first.headers["x-cache"], first.headers["x-request-id"]) == \
        ("2", "MISS", "rid-1")
    assert first.headers["x-routed-by"] == "default" and fake.calls[0].request_id == "rid-1"
    second = sentiment(client, binary=True)
    assert int(second.headers["inference-header-content-length"]) < len(second.content)
    assert second.headers["content-type"] == "application/octet-stream"
    np.testing.assert_array_equal(result(second).as_numpy("probabilities"), probabilities(fake))
    assert second.headers["x-cache"] == "HIT" and "id" not in result(second).get_response()
    assert len(fake.calls) == 1


def test_classification_is_part_of_the_key_and_comes_as_bytes(client, fake):
    plain = sentiment(client, text="classify me")
    assert plain.headers["x-cache"] == "MISS"
    for binary in (True, False):
        top = sentiment(client, text="classify me", binary=binary, class_count=2)
        want = fake.classify(probabilities(fake, "classify me"), 2, LABELS)
        got = result(top).as_numpy("probabilities")  # JSON strings come back as str, binary ones as bytes
        assert got.shape == (1, 2) and [x if isinstance(x, bytes) else x.encode() for x in got.ravel()] == \
            want.ravel().tolist()
        assert want[0, 0].decode().endswith(LABELS[int(np.argmax(probabilities(fake, "classify me")))])
        assert result(top).get_output("probabilities")["datatype"] == "BYTES"
        assert top.headers["x-cache"] == ("MISS" if binary else "HIT")
    assert len(fake.calls) == 2


def test_several_inputs_bytes_and_every_output_by_default(client, fake):
    ids = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    note = np.array([[b"ab"], [b"hello"]], dtype=object)
    want = np.array([[(s + 2) * k for k in (1, 2, 3)] for s in (6 + 2, 15 + 5)], dtype=np.float32)  # v2
    binary = post(client, "echo", [tensor("ids", ids, "INT64"), tensor("note", note, "BYTES")])
    assert "inference-header-content-length" in binary.headers  # no outputs named: all binary
    np.testing.assert_array_equal(result(binary).as_numpy("vector"), want)
    as_json = post(client, "echo", [tensor("note", note, "BYTES", False), tensor("ids", ids, "INT64", False)],
                   [httpclient.InferRequestedOutput("vector", binary_data=False)])
    assert as_json.headers["x-cache"] == "MISS"  # another output request, another entry
    again = post(client, "echo", [tensor("note", note, "BYTES", False), tensor("ids", ids, "INT64", False)],
                 [httpclient.InferRequestedOutput("vector", binary_data=True)])
    assert again.headers["x-cache"] == "HIT"  # inputs in another order and encoding: the same entry
    np.testing.assert_array_equal(result(again).as_numpy("vector"), want)
    assert [c.rows for c in fake.calls] == [2, 2]


def test_a_pinned_version_is_served_or_refused_as_triton_would(client, fake):
    v1 = sentiment(client, version="1")
    assert (result(v1).get_response()["model_version"], v1.headers["x-routed-by"]) == ("1", "pinned")
    np.testing.assert_array_equal(result(v1).as_numpy("probabilities"), probabilities(fake, version=1))
    assert sentiment(client, version="2").headers["x-cache"] == "MISS"  # versions never share entries
    assert_protocol_error(sentiment(client, version="9"), 404,
                          "Request for unknown model: 'sentiment' version 9 is not found")
    fake.states["sentiment"][1] = "UNAVAILABLE"
    refused = sentiment(client, text="other", version="1")
    assert_protocol_error(refused, 503, "Request for unknown model: 'sentiment' version 1 is not at ready state")
    for odd in ("v1", "\u00b2", "1" * 19):
        assert_protocol_error(sentiment(client, version=odd), 400,
                              f"model version must be a positive integer, got {odd!r}")


def test_fallback_when_the_default_is_gone(client, fake):
    fake.failures[("sentiment", 2)] = VersionUnavailable("Request for unknown model: 'sentiment' version 2 is "
                                                         "not at ready state")
    served = sentiment(client, text="fall back")
    assert (served.headers["x-model-version"], served.headers["x-routed-by"]) == ("1", "fallback")
    np.testing.assert_array_equal(result(served).as_numpy("probabilities"), probabilities(fake, "fall back", 1))
    assert 'fallbacks_total{model="sentiment",reason="not_ready"}' in client.get("/metrics").text


def test_the_canary_is_sticky_and_falls_back_on_error(app_client, fake):
    with app_client(default_model_version=1, canary_version=2, canary_percent=50) as client:
        users = [f"user-{n}" for n in range(12)]
        for user in users:
            want = "2" if in_canary(user, 50) else "1"
            for text in ("one", "two"):
                assert sentiment(client, text=text, headers={"X-User-ID": user}).headers["x-model-version"] == want
        canary_user = next(u for u in users if in_canary(u, 50))
        fake.failures[("sentiment", 2)] = TritonFailed("Triton could not run the request")
        served = sentiment(client, text="canary down", headers={"X-User-ID": canary_user})
        assert (served.headers["x-model-version"], served.headers["x-routed-by"]) == ("1", "fallback")


def test_identical_concurrent_misses_make_one_triton_call(client, fake):
    fake.hold = True
    body, headers = encode([tensor("text", text_row("together"), "UINT8")])

    async def scenario():
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as http:
            pending = [asyncio.ensure_future(http.post("/v2/models/sentiment/infer", content=body, headers=headers))
                       for _ in range(20)]
            while not fake.calls:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            fake.hold = False
            return await asyncio.gather(*pending)

    responses = client.portal.call(scenario)
    assert [r.status_code for r in responses] == [200] * 20 and len(fake.calls) == 1
    assert len({r.content for r in responses}) == 1
    assert 'singleflight_coalesced_total{model="sentiment"} 19.0' in client.get("/metrics").text


def test_a_broken_cache_entry_is_a_miss(client, fake):
    from router.dataplane.protocol import Tensor
    from router.dataplane.tensor_cache import tensor_cache_key

    for n, junk in enumerate((b"oip1\xff\xff\xff\xff", b"oip1" + b"\0" * 8, b'[["positive", 1.0]]', b"",
                              b'oip1\x02\x00\x00\x00[]')):
        text = f"junk {n}"
        key = tensor_cache_key("pred", "sentiment", 2, (Tensor("text", "UINT8", text_row(text)),),
                               [("probabilities", 0)])
        client.portal.call(client.app.state.service.cache.set, key, junk, 60)
        served = sentiment(client, text=text)
        assert served.headers["x-cache"] == "MISS", junk
        np.testing.assert_array_equal(result(served).as_numpy("probabilities"), probabilities(fake, text))


@pytest.mark.parametrize("method,path", [
    ("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/sentiment/load"),
    ("POST", "/v2/repository/models/sentiment/unload"), ("GET", "/v2/models/sentiment/stats"),
    ("GET", "/v2/models/sentiment/versions/1/stats"), ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/cudasharedmemory/region/x/register"), ("GET", "/v2/cudasharedmemory/status"),
    ("GET", "/v2/trace/setting"), ("POST", "/v2/models/sentiment/trace/setting"), ("GET", "/v2/logging"),
    ("POST", "/v2/models/sentiment/generate"),
])
def test_triton_admin_apis_are_not_reachable(client, method, path):
    assert_protocol_error(client.request(method, path), 404, "Not Found")


def test_wrong_method_says_what_is_allowed(client):
    response = client.get("/v2/models/sentiment/infer")
    assert_protocol_error(response, 405, "Method Not Allowed")
    assert response.headers["allow"] == "POST"


def _raw(client, body, headers=None, path="/v2/models/sentiment/infer"):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers=headers or {})


def _text(**over):
    return {"name": "text", "datatype": "UINT8", "shape": [1, 256], "data": [0] * 256, **over}


_SHORT = json.dumps({"inputs": [{"name": "text", "datatype": "UINT8", "shape": [1, 256],
                                 "parameters": {"binary_data_size": 10}}]}).encode()


@pytest.mark.parametrize("body,headers,message", [
    (b"", None, "the request body is empty; send an inference request"),
    (b'{"inputs": [', None, "the request body is not valid JSON"),
    ([1, 2], None, "the inference request must be a JSON object"),
    ({"inputs": []}, None, "'inputs' must be a non-empty list"),
    ({"inputs": [_text(datatype="FP32", data=[0.0] * 256)]}, None,
     "input 'text' of model 'sentiment' is UINT8, not FP32"),
    ({"inputs": [_text(shape=[1, 255], data=[0] * 255)]}, None,
     "input 'text' of model 'sentiment' has shape [1, 255]; the model takes [-1, 256] with a batch of at most 64"),
    ({"inputs": [_text(data=[0] * 255)]}, None, "input 'text': 'data' holds 255 elements; shape [1, 256] needs 256"),
    ({"inputs": [_text(data=[300] * 256)]}, None, "input 'text': a value is out of range for UINT8"),
    ({"inputs": [_text(data=["a"] * 256)]}, None, "input 'text': 'data' must hold UINT8 values"),
    ({"inputs": [_text(datatype="COMPLEX")]}, None,
     "input 'text': unsupported datatype 'COMPLEX'; one of BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, "
     "INT64, FP16, FP32, FP64, BYTES"),
    ({"inputs": [_text(name="words")]}, None, "unexpected input 'words' for model 'sentiment'; it takes text"),
    ({"inputs": [_text()], "outputs": [{"name": "logits"}]}, None,
     "unexpected output 'logits' for model 'sentiment'; it has probabilities"),
    ({"inputs": [{**_text(), "parameters": {"shared_memory_region": "r"}}]}, None,
     "input 'text': shared memory is not available through the router"),
    ({"inputs": [{"name": "text", "datatype": "UINT8", "shape": [1, 256], "parameters": {"binary_data_size": 256}}]},
     None, "input 'text': binary_data_size 256 does not fit the binary data after the JSON header"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": "99"},
     "Inference-Header-Content-Length must be a byte count within the body (14 bytes)"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": b"\xb2"},  # "²": a digit to str.isdigit, not to int()
     "Inference-Header-Content-Length must be a byte count within the body (14 bytes)"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": "0" * 5000 + "14"},
     "Inference-Header-Content-Length must be a byte count within the body (14 bytes)"),
    ({"inputs": [_text()], "parameters": {"sequence_id": 3}}, None,
     "sequence requests are not available through the router"),
    ({"inputs": [_text(shape=[0, 10**12], data=[])]}, None,
     "input 'text': shape [0, 1000000000000] has 0 elements or a dimension over 1048576; "
     "at most 1048576 elements are accepted"),
    ({"inputs": [_text()], "outputs": [{"name": "probabilities", "parameters": {"classification": 2**40}}]}, None,
     "output 'probabilities': 'classification' must be a non-negative 32-bit integer"),
    (_SHORT + b"x" * 10, {"Inference-Header-Content-Length": str(len(_SHORT))},
     "input 'text': binary_data_size is 10 bytes; shape [1, 256] of UINT8 needs 256"),
])
def test_malformed_requests_are_400_in_the_protocol_shape(client, fake, body, headers, message):
    assert_protocol_error(_raw(client, body, headers), 400, message)
    assert fake.calls == []


def test_limits(app_client, fake):
    with app_client(v2_max_inputs=1, v2_max_elements=100) as client:
        ids = np.zeros((1, 2), dtype=np.int64)
        too_many = post(client, "echo", [tensor("ids", ids, "INT64"), tensor("note", np.array([[b"x"]], dtype=object),
                                                                               "BYTES")])
        assert_protocol_error(too_many, 400, "at most 1 inputs and 1 outputs are accepted")
        assert_protocol_error(sentiment(client), 400,
                              "input 'text': shape [1, 256] has 256 elements or a dimension over 100; "
                              "at most 100 elements are accepted")
    with app_client() as client:
        big = client.post("/v2/models/sentiment/infer", content=b"x" * (2 << 20))
        assert_protocol_error(big, 413, "request body is larger than 1048576 bytes")
        bomb = gzip.compress(b" " * (4 << 20))
        assert_protocol_error(client.post("/v2/models/sentiment/infer", content=bomb,
                                          headers={"Content-Encoding": "gzip"}),
                              413, "request body is larger than 1048576 bytes once inflated")
    assert fake.calls == []


def test_a_compressed_body_with_anything_after_its_stream_is_400(client, fake):
    body, _ = encode([tensor("text", text_row("zipped"), "UINT8", False)])
    for extra in (b"junk", gzip.compress(b"{}")):
        response = client.post("/v2/models/sentiment/infer", content=gzip.compress(body) + extra,
                               headers={"Content-Encoding": "gzip"})
        assert_protocol_error(response, 400, "the request body is not valid gzip data")
    assert fake.calls == []


def test_compressed_and_big_json_requests(client, fake):
    body, _ = encode([tensor("text", text_row("zipped"), "UINT8", False)])
    zipped = client.post("/v2/models/sentiment/infer", content=gzip.compress(body),
                         headers={"Content-Encoding": "gzip"})
    np.testing.assert_array_equal(result(zipped).as_numpy("probabilities"), probabilities(fake, "zipped"))
    ids = np.arange(8 * 4000, dtype=np.int64).reshape(8, 4000)  # a JSON body over 64 KiB: parsed off the loop
    note = np.array([[b"n"]] * 8, dtype=object)
    big = post(client, "echo", [tensor("ids", ids, "INT64", False), tensor("note", note, "BYTES", False)])
    assert result(big).as_numpy("vector").shape == (8, 3)


def test_metadata_config_and_readiness(client, fake):
    server = client.get("/v2").json()
    assert (server["name"], server["extensions"]) == (
        "triton-canary-router", ["classification", "binary_tensor_data", "model_configuration"])
    assert client.get("/v2/health/live").status_code == client.get("/v2/health/ready").status_code == 200
    meta = client.get("/v2/models/sentiment").json()
    assert meta == {"name": "sentiment", "versions": ["1", "2"], "platform": "onnxruntime_onnx",
                    "inputs": [{"name": "text", "datatype": "UINT8", "shape": [-1, 256]}],
                    "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]}
    assert client.get("/v2/models/sentiment/versions/1").json()["versions"] == ["1"]
    assert client.get("/v2/models/echo/config").json() == ECHO
    assert client.get("/v2/models/sentiment/versions/2/config").json()["name"] == "sentiment"
    assert_protocol_error(client.get("/v2/models/nope"), 404,
                          "unknown model 'nope'; available: digits, echo, sentiment")
    assert_protocol_error(client.get("/v2/models/sentiment/versions/7/config"), 404,
                          "Request for unknown model: 'sentiment' version 7 is not found")
    assert client.get("/v2/models/sentiment/ready").status_code == 200
    assert client.get("/v2/models/sentiment/versions/1/ready").status_code == 200
    fake.states["sentiment"][1] = "UNAVAILABLE"
    assert_protocol_error(client.get("/v2/models/sentiment/versions/1/ready"), 400,
                          "model 'sentiment' version 1 is not ready")
    assert_protocol_error(client.get("/v2/models/nope/ready"), 404, "Request for unknown model: 'nope' is not found")


def test_the_record_fills_the_access_log_and_metrics(app_client, caplog):
    with app_client(request_logging=True) as client, caplog.at_level(logging.INFO):
        sentiment(client, text="logged", headers={"X-Request-ID": "v2-log"})
        sentiment(client, text="logged")
        metrics = client.get("/metrics").text
    line = next(r for r in caplog.records if r.name == "router.access" and r.path == "/v2/models/sentiment/infer")
    assert (line.model, line.version, line.routed_by, line.cache) == ("sentiment", 2, "default", "MISS")
    assert 'cache_hits_total{model="sentiment",version="2"} 1.0' in metrics
    assert 'router_requests_total{model="sentiment",route="/v2/models/{model}/infer",status="200",version="2"}' \
        in metrics


KEYS = [keys.entry("reader", "k-reader", ["predict"], None), keys.entry("ops", "k-ops", ["metrics"], None),
        keys.entry("slow", "k-slow", ["predict"], "2/minute")]


def test_auth_scopes_and_rate_limits(app_client, fake):
    with app_client(api_keys=KEYS) as client:
        for path in ("/v2", "/v2/health/live", "/v2/health/ready"):
            assert client.get(path).status_code == 200
        refused = sentiment(client)
        assert_protocol_error(refused, 401, "this route needs an API key with the 'predict' scope")
        assert refused.headers["www-authenticate"] == 'Bearer realm="router"'
        assert_protocol_error(client.get("/v2/models/sentiment"), 401,
                              "this route needs an API key with the 'predict' scope")
        assert_protocol_error(client.get("/v2/models/sentiment/ready", headers={"X-API-Key": "k-ops"}), 403,
                              "the API key 'ops' does not have the 'predict' scope")
        assert sentiment(client, headers={"Authorization": "Bearer k-reader"}).status_code == 200
        slow = [sentiment(client, text=f"t{n}", headers={"X-API-Key": "k-slow"}) for n in range(3)]
        assert [r.status_code for r in slow] == [200, 200, 429]
        assert slow[2].json()["error"].startswith("rate limit of 2 per 60 s exceeded")
        assert slow[2].headers["ratelimit-limit"] == "2" and "retry-after" in slow[2].headers
    assert len(fake.calls) == 3
