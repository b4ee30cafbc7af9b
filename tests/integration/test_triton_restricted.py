"""Triton's repository API restricted to a header and key
(--http-restricted-api / --grpc-restricted-protocol): only a router given the
key can index and load; anyone else is refused by Triton itself."""

from __future__ import annotations

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from devstack.processes import RouterProcess
from local_triton import Ports, TritonServer
from tests.conftest import free_port

HEADER, KEY = "triton-admin-key", "s3cret-for-this-test"


@pytest.fixture(scope="module")
def restricted_triton(triton_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("triton-restricted") / "tritonserver.log"
    server = TritonServer(triton_repo, Ports(free_port(), free_port(), free_port()), log_path=log,
                          models=["sentiment"], restricted=(HEADER, KEY))
    with server:
        yield server


def test_the_repository_api_needs_the_key(restricted_triton):
    http = httpclient.InferenceServerClient(restricted_triton.http_url.removeprefix("http://"))
    grpc = grpcclient.InferenceServerClient(restricted_triton.grpc_url)
    try:
        for call in (lambda c, h: c.get_model_repository_index(headers=h), lambda c, h: c.load_model("digits", headers=h)):
            for client in (http, grpc):
                with pytest.raises(InferenceServerException):
                    call(client, None)
                with pytest.raises(InferenceServerException):
                    call(client, {HEADER: "wrong"})
        assert http.get_model_repository_index(headers={HEADER: KEY})
        assert http.is_model_ready("sentiment")  # inference and health stay open
    finally:
        http.close()
        grpc.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_router_with_the_key_indexes_and_lazy_loads(restricted_triton, tmp_path_factory, protocol):
    env = {"TRITON_ADMIN_KEY": KEY, "LOAD_ALL_MODELS": "false", "TRITON_PROTOCOL": protocol,
           "TRITON_REFRESH_S": "0.5"}
    with RouterProcess(tmp_path_factory.mktemp("router-key"), restricted_triton, env) as router:
        models = httpx.get(f"{router.url}/models", timeout=10).json()["models"]
        assert set(models) >= {"sentiment", "digits"}
        response = httpx.post(f"{router.url}/predict/batch", timeout=60, json={
            "model": "digits", "inputs": [{"image_b64": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEAWk1v8QAAAABJRU5ErkJggg=="}]})
        assert response.status_code == 200, response.text  # digits was loaded by the router, with the key


def test_a_router_without_the_key_is_not_ready(restricted_triton, tmp_path_factory):
    env = {"TRITON_REFRESH_S": "0.5"}
    with RouterProcess(tmp_path_factory.mktemp("router-nokey"), restricted_triton, env) as router:
        ready = httpx.get(f"{router.url}/ready", timeout=10)
        assert ready.status_code == 503 and ready.json()["triton"] is False
