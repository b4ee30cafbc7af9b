"""The Redis ACL templates against a real redis-server (skipped without one):
each instance started by deploy/redis/entrypoint.sh from secret files, then
the router's own cache, job store and rate-limit storage run as the ACL users,
and what they must not do is refused."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

REDIS_SERVER = shutil.which("redis-server")
ACL = ROOT / "deploy" / "redis"

pytestmark = pytest.mark.skipif(not REDIS_SERVER, reason="redis-server not installed")


def _server_version() -> tuple[int, int]:
    out = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout
    major, minor = re.search(r"v=(\d+)\.(\d+)", out).groups()
    return int(major), int(minor)


class Instance:
    def __init__(self, tmp: Path, template: str, passwords: dict[str, str]) -> None:
        import redis

        self.port = free_port()
        self.passwords = passwords
        secrets = tmp / "secrets"
        secrets.mkdir(exist_ok=True)
        for name, value in passwords.items():
            (secrets / name).write_text(value + "\n")
        text = (ACL / template).read_text()
        if _server_version() < (7, 2):  # CLIENT SETINFO came in 7.2; the images run 7.4
            text = text.replace(" +client|setinfo", "")
        (tmp / template).write_text(text)
        self.proc = subprocess.Popen(
            ["sh", str(ACL / "entrypoint.sh"), str(tmp / template), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            env={"PATH": f"{os.path.dirname(REDIS_SERVER)}:{os.environ['PATH']}", "SECRETS_DIR": str(secrets), "ACL_DIR": str(tmp)},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
            except redis.AuthenticationError:
                break  # up, and asking for a password
            except redis.ResponseError as exc:
                assert "NOAUTH" in str(exc)
                break
            except redis.ConnectionError:
                assert self.proc.poll() is None, self.proc.stderr.read().decode()
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.passwords[f'redis_{user}_password']}@127.0.0.1:{self.port}/0"

    def client(self, user: str | None = None, password: str | None = None):
        """A client without redis-py's retries: a refused login fails at once."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if password is None and user is not None:
            password = self.passwords[f"redis_{user}_password"]
        return redis.Redis(port=self.port, username=user, password=password, socket_timeout=2,
                           retry=Retry(NoBackoff(), 0))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _passwords(*names: str) -> dict[str, str]:
    return {f"redis_{n}_password": hashlib.sha256(n.encode()).hexdigest() for n in names}


@pytest.fixture
def cache(tmp_path):
    (tmp_path / "cache").mkdir()
    instance = Instance(tmp_path / "cache", "cache.acl", _passwords("router", "admin"))
    yield instance
    instance.stop()


@pytest.fixture
def jobs(tmp_path):
    (tmp_path / "jobs").mkdir()
    instance = Instance(tmp_path / "jobs", "jobs.acl", _passwords("jobs", "admin"))
    yield instance
    instance.stop()


def _refused(call) -> None:
    import redis

    with pytest.raises((redis.AuthenticationError, redis.ResponseError)) as info:
        call()
    if not isinstance(info.value, (redis.AuthenticationError, redis.exceptions.NoPermissionError)):
        # a script's own call to an undeclared key: "The user executing the script can't access ..."
        assert re.search(r"NOPERM|NOAUTH|no permissions|authentication required|user executing the script can't",
                         str(info.value), re.I), info.value


def test_no_password_no_default_user_and_no_guessing(cache, jobs):
    for instance in (cache, jobs):
        _refused(instance.client().ping)
        _refused(instance.client().keys)
        _refused(instance.client("default", "").ping)
        _refused(instance.client("default", "anything").ping)
        _refused(instance.client("admin", "wrong").ping)
        assert instance.client("admin").acl_whoami() == "admin"
    # each application user exists on its own instance only
    _refused(jobs.client("router", cache.passwords["redis_router_password"]).ping)
    _refused(cache.client("jobs", jobs.passwords["redis_jobs_password"]).ping)


def test_the_router_cache_works_as_the_router_user(cache):
    from router.dataplane.shared_cache import RedisCache

    async def run():
        errors = []
        store = RedisCache(cache.url("router"), timeout=2.0, backoff_max=1.0, on_error=errors.append)
        try:
            assert await store.healthy()
            await store.set("pred:sentiment:v1:aa:bb", b"one", ttl=60)
            await store.set("pred:sentiment:v1:cc:dd", b"two", ttl=60)
            assert await store.get("pred:sentiment:v1:aa:bb") == b"one"
            assert await store.mget(["pred:sentiment:v1:aa:bb", "pred:sentiment:v1:cc:dd", "pred:x"]) == \
                [b"one", b"two", None]
        finally:
            await store.close()
        return errors

    assert asyncio.run(run()) == []
    assert 0 < cache.client("admin").ttl("pred:sentiment:v1:aa:bb") <= 60


def test_the_router_user_cannot_leave_its_keys_or_administer(cache):
    client = cache.client("router")
    _refused(lambda: client.get("jobs:job:1"))
    _refused(lambda: client.set("other", b"x"))
    _refused(lambda: client.delete("pred:anything"))
    _refused(lambda: client.incrby("pred:anything", 1))
    _refused(lambda: client.lpush("pred:anything", 1))
    for command in (("KEYS", "*"), ("FLUSHALL",), ("CONFIG", "GET", "*"), ("ACL", "LIST"),
                    ("SHUTDOWN",), ("SCAN", "0"), ("SUBSCRIBE", "x"), ("MODULE", "LIST")):
        _refused(lambda: client.execute_command(*command))
    # a script cannot reach past the user's keys either
    _refused(lambda: client.eval("return redis.call('GET', KEYS[1])", 1, "jobs:x"))
    _refused(lambda: client.eval("return redis.call('DEL', KEYS[1])", 1, "pred:x"))


def test_the_router_rate_limiter_counts_in_redis_as_the_router_user(cache):
    from router.edge.auth import Principal
    from router.edge.ratelimit import RateLimiter
    from router.errors import RateLimited
    from router.metrics import Metrics
    from router.settings import Settings

    async def run():
        settings = Settings(_env_file=None, redis_url=cache.url("router"), redis_timeout_s=2.0, rate_limit="3/minute")
        metrics = Metrics()
        limiter = RateLimiter(settings, metrics)
        try:
            who = Principal(name="ci", scopes=frozenset({"predict"}))
            for _ in range(3):
                await limiter.hit(who, "127.0.0.1")
            with pytest.raises(RateLimited):
                await limiter.hit(who, "127.0.0.1")
            await limiter.hit(Principal(name=None, scopes=frozenset()), "10.0.0.1")
        finally:
            await limiter.close()
        return metrics.registry.get_sample_value("rate_limit_fallbacks_total")

    assert asyncio.run(run()) == 0  # every hit counted in Redis, none fell back to memory
    keys = [k.decode() for k in cache.client("admin").keys("*")]
    assert keys and all(k.startswith("pred:ratelimit:") for k in keys)


@pytest.mark.parametrize("strategy", ["FixedWindowRateLimiter", "SlidingWindowCounterRateLimiter"])
def test_the_limits_strategies_work_under_the_rate_limit_prefix(cache, strategy):
    import limits
    from limits.aio import storage as aio_storage, strategies

    async def run():
        store = aio_storage.RedisStorage("async+" + cache.url("router"), implementation="redispy",
                                         key_prefix="pred:ratelimit")
        limiter = getattr(strategies, strategy)(store)
        rate = limits.parse("3/minute")
        assert await store.check()
        assert [await limiter.hit(rate, "key-a") for _ in range(4)] == [True, True, True, False]
        assert await limiter.test(rate, "key-b")
        assert (await limiter.get_window_stats(rate, "key-a")).remaining == 0
        await limiter.clear(rate, "key-a")
        assert await limiter.hit(rate, "key-a")
        await store.bridge.storage.aclose()

    asyncio.run(run())


def test_the_job_store_works_as_the_jobs_user(jobs):
    from router.jobs.store import STREAM, JobPayload, JobStore
    from router.settings import Settings

    async def run():
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(jobs.url("jobs"), socket_timeout=5)
        try:
            store = JobStore(client, Settings(_env_file=None))
            await store.ensure_group()
            await store.ensure_group()  # BUSYGROUP the second time: tolerated
            payload = JobPayload([{"text": "hello"}], "sentiment", None, 1, "rk", False)
            job_id, created = await store.submit(payload, "idem-1", owner="ci")
            assert created and (await store.submit(payload, "idem-1", owner="ci")) == (job_id, False)
            other, _ = await store.submit(payload, None, owner="ci")
            assert (await store.get(job_id, owner="ci"))["status"] == "queued"
            read = await store.read("worker-1", count=10, block_ms=100)
            assert [j for _, j in read] == [job_id, other]
            status, got, attempt = await store.start(job_id)
            assert (status, got, attempt) == ("queued", payload, 1)
            await store.finish(read[0][0], job_id, {"ok": True})
            assert (await store.get(job_id, owner="ci"))["result"] == {"ok": True}
            await store.start(other)
            await store.fail(read[1][0], other, {"code": "x"}, final=False)
            await store.claim_stale("worker-2", count=10)
            await store.fail(read[1][0], other, {"code": "x"}, final=True)
            assert (await store.get(other, owner="ci"))["status"] == "failed"
            await store.ack(read[1][0])
            await store.trim_acknowledged()
            assert await client.xlen(STREAM) == 0 and await client.ping()
        finally:
            await client.aclose()

    asyncio.run(run())


def test_the_jobs_user_cannot_leave_its_keys_or_administer(jobs):
    client = jobs.client("jobs")
    _refused(lambda: client.get("pred:x"))
    _refused(lambda: client.hset("other", "a", 1))
    _refused(lambda: client.xadd("other", {"a": 1}))
    for command in (("KEYS", "*"), ("SCAN", "0"), ("FLUSHALL",), ("CONFIG", "SET", "maxmemory", "0"), ("ACL", "LIST"),
                    ("SUBSCRIBE", "x"), ("PSUBSCRIBE", "control:*"), ("PUBLISH", "x", "m")):
        _refused(lambda: client.execute_command(*command))
    _refused(lambda: client.eval("return redis.call('GET', KEYS[1])", 1, "pred:x"))


LEASE_ACQUIRE = "return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', 5000)"
LEASE_RENEW = """if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0"""
LEASE_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def test_the_rollout_control_plane_works_as_the_jobs_user(jobs):
    """What router/control/ runs on the durable Redis: a state changed under WATCH
    and announced in the same transaction, the figures' counters, the
    controller's lease scripts, the subscription to the announcements."""
    client = jobs.client("jobs")
    listener = jobs.client("jobs").pubsub()
    try:
        listener.subscribe("control:rollouts")
        assert listener.get_message(timeout=2) == {"type": "subscribe", "pattern": None,
                                                    "channel": b"control:rollouts", "data": 1}
        with client.pipeline(transaction=True) as pipe:
            pipe.watch("control:rollout:x")
            assert pipe.get("control:rollout:x") is None
            pipe.multi()
            pipe.set("control:rollout:x", b'{"revision": 1}')
            pipe.sadd("control:models", "x")
            pipe.publish("control:rollouts", "x")
            assert pipe.execute() == [True, 1, 1]  # one subscriber got it
        assert listener.get_message(timeout=2) == {"type": "message", "pattern": None,
                                                    "channel": b"control:rollouts", "data": b"x"}
        client.set("control:rollout:y", b'{"revision": 4}')
        assert client.sadd("control:models", "y") == 1
        assert client.smembers("control:models") == {b"x", b"y"}
        assert client.mget(["control:rollout:x", "control:rollout:z"]) == [b'{"revision": 1}', None]
        client.set("control:verdict:x", b"{}", ex=60)
        assert client.get("control:verdict:x") == b"{}"

        with client.pipeline(transaction=True) as pipe:
            pipe.hincrby("control:figures:x:1", "requests", 3)
            pipe.hincrbyfloat("control:figures:x:1", "latency_s", 0.25)
            pipe.expire("control:figures:x:1", 600)
            assert pipe.execute() == [3, 0.25, True]
        with client.pipeline(transaction=False) as pipe:
            pipe.hgetall("control:figures:x:1")
            pipe.hgetall("control:figures:x:2")
            assert pipe.execute() == [{b"requests": b"3", b"latency_s": b"0.25"}, {}]

        assert client.eval(LEASE_ACQUIRE, 1, "control:lease", "router-1") == b"OK"
        assert client.eval(LEASE_ACQUIRE, 1, "control:lease", "router-2") is None  # held: NX refuses
        renew = client.register_script(LEASE_RENEW)  # EVALSHA, loading the script when Redis lacks it
        assert renew(keys=["control:lease"], args=["router-1", 10_000]) == 1
        assert renew(keys=["control:lease"], args=["router-2", 10_000]) == 0
        assert 5000 < jobs.client("admin").pttl("control:lease") <= 10_000  # renewed past the first 5 s
        assert client.eval(LEASE_RELEASE, 1, "control:lease", "router-2") == 0
        assert client.eval(LEASE_RELEASE, 1, "control:lease", "router-1") == 1
        assert client.pexpire("control:rollout:y", 60_000) and client.delete("control:rollout:y") == 1
        listener.unsubscribe("control:rollouts")
        assert listener.get_message(timeout=2)["type"] == "unsubscribe"
        assert client.ping()
    finally:
        listener.close()
    admin = jobs.client("admin")
    assert admin.get("control:lease") is None and 0 < admin.ttl("control:figures:x:1") <= 600


def test_the_control_plane_opens_nothing_beyond_its_prefix(jobs):
    client = jobs.client("jobs")
    jobs.client("admin").set("other:x", b"secret")
    _refused(lambda: client.get("other:x"))
    _refused(lambda: client.set("other:x", b"x"))
    _refused(lambda: client.mget(["control:rollout:x", "other:x"]))
    _refused(lambda: client.hincrby("other:x", "n", 1))
    _refused(lambda: client.pexpire("other:x", 1000))
    _refused(lambda: client.delete("other:x"))
    _refused(lambda: client.execute_command("WATCH", "other:x"))
    _refused(lambda: client.eval(LEASE_ACQUIRE, 1, "other:x", "router-1"))
    _refused(lambda: client.eval("return redis.call('GET', KEYS[1])", 1, "other:x"))
    # a script cannot reach past its declared keys either
    _refused(lambda: client.eval("return redis.call('GET', 'other:x')", 1, "control:lease"))
    # the control commands stay on control:*, the job commands on jobs:*
    _refused(lambda: client.set("jobs:x", b"x"))
    _refused(lambda: client.get("jobs:x"))
    _refused(lambda: client.xadd("control:x", {"a": 1}))
    _refused(lambda: client.hset("control:figures:x:1", "a", 1))
    _refused(lambda: client.execute_command("PUBLISH", "control:other", "m"))
    _refused(lambda: client.execute_command("SUBSCRIBE", "control:other"))
    assert jobs.client("admin").get("other:x") == b"secret"
