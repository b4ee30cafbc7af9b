"""A real redis-server (in memory only) for the unit tests that need Redis
itself (job store, rollout figures, cache tiers); no Triton."""

from __future__ import annotations

import shutil

import pytest
import redis


@pytest.fixture(scope="session")
def jobs_redis(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from devstack.processes import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("unit-redis"), persistent=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def db(jobs_redis):
    """A plain client on an empty database."""
    client = redis.Redis.from_url(jobs_redis.url)
    client.flushall()
    yield client
    client.close()
