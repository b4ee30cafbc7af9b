"""The Open Inference Protocol at the router process, in front of the real
Triton and a real redis-server: an unmodified tritonclient.http client gets
from the router what it gets from Triton, for every model of the repository."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.http._utils import _get_inference_request
from tritonclient.utils import InferenceServerException

from devstack.processes import RouterProcess
from router.dataplane.routing import in_canary
from tests.conftest import MODEL_REPOSITORY

MODELS = sorted(p.name for p in MODEL_REPOSITORY.iterdir() if (p / "config.pbtxt").exists())
# sentiment: v2 by default, 20% of keys on v1; digits: a canary version that does not exist, so
# every unpinned digits request falls back to v2.
ROUTES = '{"digits": {"default_version": 2, "canary_version": 7, "canary_percent": 100}}'


@pytest.fixture(scope="module")
def router(triton, redis_server, tmp_path_factory):
    with RouterProcess(tmp_path_factory.mktemp("v2-router"), triton, {
        "TRITON_REFRESH_S": "0.5", "REDIS_URL": redis_server.url, "REQUEST_LOGGING": "false",
        "DEFAULT_MODEL_VERSION": "2", "CANARY_VERSION": "1", "CANARY_PERCENT": "20", "MODEL_ROUTES": ROUTES,
    }) as proc:
        yield proc


@pytest.fixture(scope="module")
def clients(router, triton):
    ours = httpclient.InferenceServerClient(router.url.removeprefix("http://"))
    theirs = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))
    yield ours, theirs
    ours.close()
    theirs.close()


def sample(meta: dict, seed: int, batch: int = 2) -> list[tuple[str, str, np.ndarray]]:
    """Inputs that fit the model's metadata: bytes for UINT8, small ids and a mask of ones for INT64."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in meta["inputs"]:
        shape = [batch if i == 0 else (d if d > 0 else 8) for i, d in enumerate(spec["shape"])]
        kind = spec["datatype"]
        if kind == "UINT8":
            array = rng.integers(0, 256, shape, dtype=np.uint8)
        elif kind.startswith("INT"):
            array = (np.ones(shape) if "mask" in spec["name"] else rng.integers(1, 100, shape)).astype(
                {"INT64": np.int64, "INT32": np.int32}[kind])
        else:
            array = rng.random(shape, dtype=np.float32)
        out.append((spec["name"], kind, array))
    return out


def inputs(tensors, binary: bool) -> list[httpclient.InferInput]:
    made = []
    for name, kind, array in tensors:
        made.append(httpclient.InferInput(name, list(array.shape), kind).set_data_from_numpy(array, binary_data=binary))
    return made


def labelled(config: dict) -> list[str]:
    return [o["name"] for o in config["output"] if o.get("label_filename")]


def assert_same(ours: httpclient.InferResult, theirs: httpclient.InferResult) -> None:
    names = [o["name"] for o in theirs.get_response()["outputs"]]
    assert [o["name"] for o in ours.get_response()["outputs"]] == names
    for name in names:
        a, b = ours.as_numpy(name), theirs.as_numpy(name)
        assert a.shape == b.shape and a.dtype == b.dtype
        assert a.tolist() == b.tolist(), name


@pytest.mark.parametrize("model", MODELS)
def test_metadata_config_and_readiness_equal_tritons(clients, model):
    ours, theirs = clients
    assert ours.is_server_live() and ours.is_server_ready()
    assert ours.get_server_metadata()["extensions"] == ["classification", "binary_tensor_data", "model_configuration"]
    meta = theirs.get_model_metadata(model)
    for version in ["", *meta["versions"], "99"]:
        assert ours.is_model_ready(model, version) == theirs.is_model_ready(model, version)
        if version == "99":
            for call in (ours.get_model_metadata, ours.get_model_config):
                with pytest.raises(InferenceServerException) as refused:
                    call(model, version)
                assert (refused.value.status(), refused.value.message()) == (
                    "404", f"Request for unknown model: '{model}' version 99 is not found")
            continue
        assert ours.get_model_metadata(model, version) == theirs.get_model_metadata(model, version)
        assert ours.get_model_config(model, version) == theirs.get_model_config(model, version)


@pytest.mark.parametrize("model", MODELS)
def test_outputs_equal_tritons(clients, model):
    ours, theirs = clients
    meta, config = theirs.get_model_metadata(model), theirs.get_model_config(model)
    tensors = sample(meta, seed=uuid.uuid4().int % 10**6)
    counts = [0, 2] if labelled(config) else [0]
    for binary in (True, False):
        for count in counts:
            outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary,
                                                       class_count=count if o["name"] in labelled(config) else 0)
                       for o in meta["outputs"]]
            routed = ours.infer(model, inputs(tensors, binary), outputs=outputs)
            served = routed.get_response()["model_version"]
            assert_same(routed, theirs.infer(model, inputs(tensors, binary), model_version=served, outputs=outputs))
            for version in meta["versions"]:
                pinned = ours.infer(model, inputs(tensors, binary), model_version=version, outputs=outputs)
                assert pinned.get_response()["model_version"] == version
                assert_same(pinned, theirs.infer(model, inputs(tensors, binary), model_version=version,
                                                 outputs=outputs))
    every = ours.infer(model, inputs(tensors, True))  # no outputs named: every output, binary
    assert_same(every, theirs.infer(model, inputs(tensors, True), model_version=every.get_response()["model_version"]))


def _post(http: httpx.Client, model: str, tensors, binary: bool, version: str = "", headers=None) -> httpx.Response:
    body, size = _get_inference_request(inputs(tensors, binary), "", None, 0, False, False, 0, None, None)
    extra = {} if size is None else {"Inference-Header-Content-Length": str(size)}
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    return http.post(path, content=body, headers={**extra, **(headers or {})})


def _settled(count, model: str, version: int) -> int:
    """Triton's inference count once it has stopped moving (statistics land just after a response)."""
    last = count(model, version)
    for _ in range(20):
        time.sleep(0.05)
        now = count(model, version)
        if now == last:
            return now
        last = now
    return last


@pytest.mark.parametrize("model", MODELS)
def test_a_repeat_is_a_hit_with_no_new_inference(router, clients, triton_stats, model):
    meta = clients[1].get_model_metadata(model)
    tensors = sample(meta, seed=uuid.uuid4().int % 10**6, batch=1)  # Triton counts inferences per batch row
    version = meta["versions"][0]
    with httpx.Client(base_url=router.url, timeout=30) as http:
        before = _settled(triton_stats, model, int(version))
        first = _post(http, model, tensors, binary=True, version=version)
        assert (first.status_code, first.headers["x-cache"], first.headers["x-model-version"]) == (200, "MISS", version)
        assert _settled(triton_stats, model, int(version)) == before + 1
        for binary in (True, False):  # the JSON form of the same tensors is the same entry
            again = _post(http, model, tensors, binary=binary, version=version)
            assert (again.status_code, again.headers["x-cache"]) == (200, "HIT")
        assert _settled(triton_stats, model, int(version)) == before + 1


def test_the_canary_split_applies(router):
    meta = {"inputs": [{"name": "text", "datatype": "UINT8", "shape": [-1, 256]}]}
    tensors = sample(meta, seed=7, batch=1)
    body, size = _get_inference_request(inputs(tensors, True), "", None, 0, False, False, 0, None, None)
    ids = [f"v2-canary-{i}" for i in range(2000)]

    async def traffic():
        sem = asyncio.Semaphore(32)
        async with httpx.AsyncClient(base_url=router.url, timeout=30) as http:
            async def one(rid):
                async with sem:
                    return await http.post("/v2/models/sentiment/infer", content=body, headers={
                        "Inference-Header-Content-Length": str(size), "X-Request-ID": rid})
            return await asyncio.gather(*(one(rid) for rid in ids))

    responses = asyncio.run(traffic())
    assert all(r.status_code == 200 for r in responses)
    routed = Counter((r.headers["x-routed-by"], r.headers["x-model-version"]) for r in responses)
    assert set(routed) == {("canary", "1"), ("default", "2")}
    assert [r.headers["x-model-version"] for r in responses] == ["1" if in_canary(i, 20) else "2" for i in ids]
    assert 17 <= routed[("canary", "1")] / len(ids) * 100 <= 23
    with httpx.Client(base_url=router.url, timeout=30) as http:
        sticky = {_post(http, "sentiment", sample(meta, seed=n, batch=1), True,
                        headers={"X-User-ID": "v2-user-1"}).headers["x-model-version"] for n in range(5)}
    assert sticky == {"1" if in_canary("v2-user-1", 20) else "2"}


def test_pinned_and_fallback(router, clients):
    ours, theirs = clients
    meta = theirs.get_model_metadata("digits")
    tensors = sample(meta, seed=11)
    with httpx.Client(base_url=router.url, timeout=30) as http:
        fallback = _post(http, "digits", tensors, binary=True)
        assert (fallback.headers["x-routed-by"], fallback.headers["x-model-version"]) == ("fallback", "2")
        pinned = _post(http, "digits", tensors, binary=True, version="1")
        assert (pinned.headers["x-routed-by"], pinned.headers["x-model-version"]) == ("pinned", "1")
    for client in (ours, theirs):  # a pinned version that does not exist: Triton's own error, no fallback
        with pytest.raises(InferenceServerException) as refused:
            client.infer("digits", inputs(tensors, True), model_version="9")
        assert (refused.value.status(), refused.value.message()) == (
            "404", "Request for unknown model: 'digits' version 9 is not found")


@pytest.mark.parametrize("method,path", [
    ("POST", "/v2/repository/index"), ("POST", "/v2/repository/models/sentiment/unload"),
    ("GET", "/v2/models/sentiment/stats"), ("GET", "/v2/models/sentiment/versions/1/stats"),
    ("GET", "/v2/systemsharedmemory/status"), ("GET", "/v2/cudasharedmemory/status"),
    ("GET", "/v2/trace/setting"), ("GET", "/v2/logging"),
])
def test_tritons_other_apis_are_404(router, method, path):
    response = httpx.request(method, router.url + path)
    assert (response.status_code, response.json()) == (404, {"error": "Not Found"})
    assert response.headers["x-request-id"]


def test_malformed_bodies_are_400_in_the_protocol_shape(router, clients):
    response = httpx.post(f"{router.url}/v2/models/sentiment/infer", content=b'{"inputs": [')
    assert (response.status_code, response.json()) == (400, {"error": "the request body is not valid JSON"})
    bad = [("text", "UINT8", np.zeros((1, 255), dtype=np.uint8))]
    with pytest.raises(InferenceServerException) as refused:
        clients[0].infer("sentiment", inputs(bad, True))
    assert refused.value.status() == "400"
    assert refused.value.message() == ("input 'text' of model 'sentiment' has shape [1, 255]; "
                                       "the model takes [-1, 256] with a batch of at most 64")


def test_the_same_over_tritons_http_protocol(triton, clients, tmp_path):
    """TRITON_PROTOCOL=http: the gateway's HTTP variant gives the same answers."""
    theirs = clients[1]
    with RouterProcess(tmp_path, triton, {"TRITON_PROTOCOL": "http", "REQUEST_LOGGING": "false"}) as proc:
        ours = httpclient.InferenceServerClient(proc.url.removeprefix("http://"))
        try:
            for model in MODELS:
                meta = theirs.get_model_metadata(model)
                assert ours.get_model_metadata(model, "1") == theirs.get_model_metadata(model, "1")
                assert ours.get_model_config(model) == theirs.get_model_config(model)
                assert ours.is_model_ready(model, "1") and not ours.is_model_ready(model, "99")
                tensors = sample(meta, seed=uuid.uuid4().int % 10**6)
                for binary in (True, False):
                    outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary) for o in meta["outputs"]]
                    assert_same(ours.infer(model, inputs(tensors, binary), model_version="1", outputs=outputs),
                                theirs.infer(model, inputs(tensors, binary), model_version="1", outputs=outputs))
        finally:
            ours.close()
