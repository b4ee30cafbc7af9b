"""The rollout control plane's unit tests: pure logic, and the figures
against the jobs tests' in-memory redis-server."""

from tests.router.jobs.conftest import db, jobs_redis  # noqa: F401  (the same real redis-server fixture)
