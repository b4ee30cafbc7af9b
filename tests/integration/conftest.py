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
