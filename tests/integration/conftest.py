"""A real tritonserver on free loopback ports, serving a copy of model_repository/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from local_triton import Ports, TritonServer
from tests.conftest import MODEL_REPOSITORY, free_port


@pytest.fixture(scope="session")
def triton_repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("triton") / "model_repository"
    shutil.copytree(MODEL_REPOSITORY, repo)
    return repo


@pytest.fixture(scope="session")
def triton(triton_repo, tmp_path_factory):
    log = tmp_path_factory.mktemp("triton-log") / "tritonserver.log"
    server = TritonServer(triton_repo, Ports(free_port(), free_port(), free_port()), log_path=log)
    with server:
        yield server


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    from devstack.processes import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def triton_stats(triton):
    """Triton's inference count for one model version, read over HTTP."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton.http_url.removeprefix("http://"))

    def count(model: str, version: int) -> int:
        stats = client.get_inference_statistics(model, str(version))["model_stats"][0]
        return int(stats["inference_count"])

    yield count
    client.close()
