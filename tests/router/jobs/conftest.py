"""A real redis-server (in memory only) for the job store's tests; no Triton."""

from __future__ import annotations

import asyncio
import shutil

import pytest
import redis

from router.jobs.store import open_jobs
from router.settings import Settings


@pytest.fixture(scope="session")
def jobs_redis(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    from devstack.processes import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("jobs-unit-redis"), persistent=False).start()
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


def settings_for(url: str, **overrides) -> Settings:
    return Settings(_env_file=None, **{"redis_url": None, "jobs_redis_url": url, "request_logging": False,
                                       "triton_refresh_s": 60, **overrides})


@pytest.fixture
def with_store(jobs_redis, db):
    """`with_store(scenario, **settings)` runs `await scenario(store)` on a fresh store."""

    def run(scenario, **overrides):
        async def main():
            async with open_jobs(settings_for(jobs_redis.url, **overrides)) as store:
                return await scenario(store)
        return asyncio.run(main())
    return run
