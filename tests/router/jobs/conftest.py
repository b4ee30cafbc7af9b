"""The job store over the real redis-server of tests/router/conftest.py; no Triton."""

from __future__ import annotations

import asyncio

import pytest

from router.jobs.store import open_jobs
from router.settings import Settings


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
