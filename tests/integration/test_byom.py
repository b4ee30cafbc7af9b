"""A team's own PyTorch models, end to end: built with `export build --from`
(a factory file and a .pt2), loaded into a running Triton through its
repository API, and served through the router's /v2 routes, where an
unmodified tritonclient.http gets what the PyTorch model computes."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient

from devstack.processes import RouterProcess
from export.cli import main as export_main
from local_triton import Ports, TritonServer
from tests.conftest import MODEL_REPOSITORY, free_port
from tests.export.test_from_source import FACTORY, _save_program


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A Triton serving sentiment only at first, over a repository the test adds models to."""
    root = tmp_path_factory.mktemp("byom")
    repo = root / "model_repository"
    repo.mkdir()
    shutil.copytree(MODEL_REPOSITORY / "sentiment", repo / "sentiment")
    factory = root / "twoheads.py"
    factory.write_text(FACTORY)
    assert export_main(["--repository", str(repo), "build", "twoheads", "--from", f"{factory}:servable", "-q"]) == 0
    program = _save_program(root / "scale.pt2", dynamic=True)
    assert export_main(["--repository", str(repo), "build", "scale", "--from", str(program), "-q"]) == 0
    server = TritonServer(repo, Ports(free_port(), free_port(), free_port()), models=["sentiment"],
                          log_path=root / "triton.log")
    with server:
        admin = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        for model in ("twoheads", "scale"):  # the repository API, as a promotion would
            admin.load_model(model)
            assert admin.is_model_ready(model, "1")
        admin.close()
        with RouterProcess(root / "router", server, {"LOAD_ALL_MODELS": "false", "TRITON_REFRESH_S": "0.5"}) as router:
            yield router, factory, root


def infer(url: str, model: str, inputs: dict[str, np.ndarray], binary: bool, **outputs):
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        tensors = []
        for name, array in inputs.items():
            datatype = {np.float32: "FP32", np.int64: "INT64", np.bool_: "BOOL"}[array.dtype.type]
            tensor = httpclient.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=binary)
            tensors.append(tensor)
        requested = [httpclient.InferRequestedOutput(name, binary_data=binary, **params)
                     for name, params in outputs.items()]
        return client.infer(model, tensors, outputs=requested or None)
    finally:
        client.close()


@pytest.mark.parametrize("binary", [True, False])
def test_a_factory_model_serves_what_pytorch_computes(stack, binary):
    router, factory, _ = stack
    spec = importlib.util.spec_from_file_location("twoheads_factory", factory)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    servable = module.servable()
    rng = np.random.default_rng(7)
    features = rng.standard_normal((6, 4)).astype(np.float32)
    tokens = rng.integers(0, 10, (6, 3)).astype(np.int64)
    with torch.no_grad():
        scores, embedding = servable.module(torch.from_numpy(features), torch.from_numpy(tokens))
    result = infer(router.url, "twoheads", {"features": features, "tokens": tokens}, binary, scores={}, embedding={})
    np.testing.assert_allclose(result.as_numpy("scores"), scores.numpy(), atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("embedding"), embedding.numpy(), atol=1e-5)
    response = result.get_response()
    assert response["model_name"] == "twoheads" and response["model_version"] == "1"
    top = infer(router.url, "twoheads", {"features": features, "tokens": tokens}, binary,
                scores={"class_count": 1}).as_numpy("scores")
    text = [row[0].decode() if isinstance(row[0], bytes) else row[0] for row in top]  # JSON gives str, as Triton's
    labels = [entry.split(":")[2] for entry in text]
    assert labels == [("cat", "dog", "bird")[i] for i in scores.numpy().argmax(1)]


def test_a_pt2_model_serves_what_pytorch_computes(stack):
    router, _, root = stack
    program = torch.export.load(str(root / "scale.pt2"))
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    flags = np.array([[True, False] * 3] * 2)
    expected = program.module()(torch.from_numpy(x), torch.from_numpy(flags))
    result = infer(router.url, "scale", {"x": x, "flags": flags}, True)
    np.testing.assert_allclose(result.as_numpy("scaled"), expected["scaled"].numpy(), atol=1e-6)
    np.testing.assert_array_equal(result.as_numpy("kept"), expected["kept"].numpy())
