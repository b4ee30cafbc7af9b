"""The whole app under TestClient, over a FakeTriton and the in-process cache."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from router.edge.app import create_app
from router.settings import Settings
from tests.router.fakes import FakeTriton


@pytest.fixture
def fake() -> FakeTriton:
    return FakeTriton()


@pytest.fixture
def app_client(fake):
    """`with app_client(**settings) as client:` the app's lifespan runs around the block."""

    @contextmanager
    def make(**overrides):
        settings = Settings(_env_file=None, **{"request_logging": False, "triton_refresh_s": 60, "redis_url": None,
                                                  "jobs_redis_url": None, **overrides})
        with TestClient(create_app(settings, gateway=fake), raise_server_exceptions=False) as client:
            yield client
    return make


@pytest.fixture
def client(app_client):
    with app_client() as c:
        yield c
