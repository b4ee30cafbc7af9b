"""The checked-in repository, served by the real Triton over HTTP and gRPC."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from export.cli import main as export_main
from export.onnx_io import run_onnx
from export.specs import get_spec
from export.specs.sentiment import encode

MODELS = {"sentiment": [1, 2], "digits": [1, 2]}
TEXTS = ["I love this, it is wonderful!", "this was a terrible, awful day", "not good at all",
         "The service was great", "ünïcödé text is bytes too", ""]


def sample(model: str) -> np.ndarray:
    if model == "sentiment":
        return encode(TEXTS)
    from sklearn.datasets import load_digits
    return np.rint(load_digits().images[:7] * (255 / 16)).astype(np.uint8)


@pytest.fixture(scope="module")
def http(triton):
    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"), concurrency=8)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(triton):
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    yield client
    client.close()


def infer(client, module, model: str, version: int, x: np.ndarray, **out_kw):
    spec = get_spec(model)
    inp = module.InferInput(spec.input_name, list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    out = module.InferRequestedOutput(spec.output_name, **out_kw)
    return client.infer(model, [inp], model_version=str(version), outputs=[out], request_id="test-42")


@pytest.mark.parametrize("model,version", [(m, v) for m, vs in MODELS.items() for v in vs])
def test_every_version_is_ready(http, grpc, model, version):
    assert http.is_model_ready(model, str(version))
    assert grpc.is_model_ready(model, str(version))


@pytest.mark.parametrize("model,version", [(m, v) for m, vs in MODELS.items() for v in vs])
def test_http_and_grpc_equal_onnxruntime(http, grpc, triton_repo, model, version):
    x = sample(model)
    expected = run_onnx(triton_repo / model / str(version) / "model.onnx", x, get_spec(model).input_name)
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        result = infer(client, module, model, version, x)
        got = result.as_numpy("probabilities")
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-6)
        response = result.get_response()
        assert (response["id"] if module is httpclient else response.id) == "test-42"


def test_models_learned_something(http):
    probs = infer(http, httpclient, "sentiment", 2, encode(["I love this, it is wonderful!",
                                                             "this was a terrible, awful day"])).as_numpy("probabilities")
    assert list(probs.argmax(axis=1)) == [1, 0]
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = np.rint(digits.images[:50] * (255 / 16)).astype(np.uint8)
    probs = infer(http, httpclient, "digits", 2, x).as_numpy("probabilities")
    assert (probs.argmax(axis=1) == digits.target[:50]).mean() >= 0.9


def test_classification_extension_returns_labels(http, grpc, triton_repo):
    x = encode(["I love this, it is wonderful!", "this was a terrible, awful day"])
    expected = run_onnx(triton_repo / "sentiment" / "2" / "model.onnx", x, "text")
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        classes = infer(client, module, "sentiment", 2, x, class_count=2).as_numpy("probabilities")
        assert classes.shape == (2, 2)
        for row, probs in zip(classes, expected):
            score, index, label = row[0].decode().split(":")
            assert int(index) == int(probs.argmax())
            assert label == ("positive", "negative")[0 if probs.argmax() == 1 else 1]
            assert float(score) == pytest.approx(float(probs.max()), abs=1e-5)


def test_config_parameters_tell_clients_the_input(http):
    config = http.get_model_config("sentiment")
    params = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert params["input_kind"] == "text_utf8" and params["text_length"] == "256"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["dynamic_batching"]["preferred_batch_size"] == [8, 16, 32]


def _counts(client, model, version):
    stats = client.get_inference_statistics(model, str(version))["model_stats"][0]
    return stats["inference_count"], stats["execution_count"]


async def _concurrent_single_rows(url: str, x: np.ndarray) -> None:
    import tritonclient.grpc.aio as aioclient

    client = aioclient.InferenceServerClient(url)
    try:
        async def one(row):
            inp = aioclient.InferInput("text", [1, x.shape[1]], "UINT8")
            inp.set_data_from_numpy(x[row : row + 1])
            await client.infer("sentiment", [inp], model_version="2")
        await asyncio.gather(*(one(i) for i in range(len(x))))
    finally:
        await client.close()


def test_dynamic_batching_merges_concurrent_requests(triton, http):
    x = encode(["dynamic batching " + str(i) for i in range(256)])
    infer0, exec0 = _counts(http, "sentiment", 2)
    asyncio.run(_concurrent_single_rows(triton.grpc_url, x))
    for _ in range(50):  # statistics are recorded just after each response is sent
        infer1, exec1 = _counts(http, "sentiment", 2)
        if infer1 - infer0 >= 256:
            break
        time.sleep(0.1)
    assert infer1 - infer0 == 256
    assert exec1 - exec0 < 256, f"{exec1 - exec0} executions for 256 inferences: no batching"


def test_metrics_endpoint_counts_inferences(triton, http):
    infer(http, httpclient, "digits", 1, sample("digits"))
    with urllib.request.urlopen(triton.metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(r'nv_inference_count\{model="digits",version="1"\} (\d+)', text)
    assert match and int(match.group(1)) >= 7
    assert "nv_inference_exec_count" in text


def test_new_version_loads_without_restart(triton, triton_repo, http, grpc):
    assert export_main(["--repository", str(triton_repo), "build", "digits", "--arch", "linear",
                        "--epochs", "20", "-q"]) == 0
    assert (triton_repo / "digits" / "3" / "model.onnx").is_file()
    assert not http.is_model_ready("digits", "3")
    http.load_model("digits")  # re-reads the repository: version 3 joins 1 and 2
    for version in ("1", "2", "3"):
        assert http.is_model_ready("digits", version)
    x = sample("digits")
    expected = run_onnx(triton_repo / "digits" / "3" / "model.onnx", x, "image")
    np.testing.assert_allclose(infer(grpc, grpcclient, "digits", 3, x).as_numpy("probabilities"), expected, atol=1e-6)
    index = {(m["name"], m["version"]): m["state"] for m in http.get_model_repository_index()}
    assert index[("digits", "3")] == "READY"


def test_launcher_stops_cleanly_on_sigterm(tmp_path):
    """`python -m local_triton` serves, then exits 0 on SIGTERM and frees its ports."""
    import signal
    import subprocess
    import sys

    from tests.conftest import MODEL_REPOSITORY, ROOT, free_port

    http_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_triton", "--model-repository", str(MODEL_REPOSITORY),
         "--http-port", str(http_port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
         "--log-file", str(tmp_path / "triton.log")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Ctrl-C to stop"):
                break
        assert "  model    sentiment v2 READY\n" in lines, "".join(lines)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        assert client.is_server_ready()
        client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopping tritonserver..." in proc.stdout.read()
        with pytest.raises(Exception):
            httpclient.InferenceServerClient(f"127.0.0.1:{http_port}", connection_timeout=2).is_server_live()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
