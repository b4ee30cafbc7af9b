import asyncio
import random
import time

import numpy as np
import pytest

from router.dataplane.cache import LRUCache, cache_key, jittered_ttl
from router.dataplane.shared_cache import RedisCache, unseal
from router.dataplane.tiered_cache import TieredCache


def key(tensor, version=2, top_k=1, model="sentiment"):
    return cache_key("pred", model, version, tensor.tobytes(), tensor.shape[1:], str(tensor.dtype), f"top_k={top_k}")


def test_cache_key_is_canonical_and_version_aware():
    a = np.frombuffer(b"hello".ljust(256, b"\0"), dtype=np.uint8).reshape(1, 256)
    assert key(a) == key(a.copy())
    assert key(a).startswith("pred:sentiment:v2:")
    assert key(a, version=1) != key(a)
    assert key(a, top_k=2) != key(a)
    assert key(a, model="other") != key(a)
    b = a.copy()
    b[0, 5] = 33
    assert key(b) != key(a)
    assert key(a.reshape(1, 16, 16)) != key(a)  # same bytes, other shape


def test_jittered_ttl_stays_within_bounds():
    rng = random.Random(0)
    ttls = [jittered_ttl(3600, 0.1, rng) for _ in range(1000)]
    assert min(ttls) >= 3240 and max(ttls) <= 3960 and len(set(ttls)) > 100


def test_lru_evicts_least_recent_and_expires():
    async def scenario():
        cache = LRUCache(max_entries=2)
        await cache.set("a", b"1", 60)
        await cache.set("b", b"2", 60)
        assert await cache.get("a") == b"1"  # a is now the most recent
        await cache.set("c", b"3", 60)
        assert await cache.mget(["a", "b", "c"]) == [b"1", None, b"3"]
        await cache.set("d", b"4", -1)  # already expired
        assert await cache.get("d") is None
    asyncio.run(scenario())


def test_lru_is_bounded_by_bytes_too():
    cache = LRUCache(max_entries=100, max_bytes=10)
    for n in range(5):
        cache.put(f"k{n}", b"abcd", expires=time.time() + 60)
    assert len(cache) == 2 and cache.bytes == 8  # the two most recent of 4 bytes each
    cache.put("big", b"x" * 11, expires=time.time() + 60)  # larger than the whole tier: not kept
    assert cache.lookup("big") is None and len(cache) == 2
    disabled = LRUCache(max_entries=0)
    disabled.put("k", b"v", time.time() + 60)
    assert disabled.lookup("k") is None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_tiers_share_redis_and_keep_the_entry_expiry(jobs_redis, db):
    """Two routers' caches over one real Redis: a store by one is a hit for the other,
    from Redis first and then from its own tier, until the entry's own expiry."""
    clock = Clock()

    async def scenario():
        tiers: list[str] = []
        one = TieredCache(LRUCache(100, clock=clock), RedisCache(jobs_redis.url, 1.0, 1.0, clock=clock))
        two = TieredCache(LRUCache(100, clock=clock), RedisCache(jobs_redis.url, 1.0, 1.0, clock=clock),
                          on_hit=tiers.append)
        try:
            await one.set("pred:m:v1:a", b"scores", ttl=30)
            await one.flush()
            assert await two.get("pred:m:v1:a") == b"scores" and tiers == ["redis"]
            assert await two.get("pred:m:v1:a") == b"scores" and tiers == ["redis", "local"]
            clock.now += 31  # past the entry's expiry: gone from both tiers
            assert await two.mget(["pred:m:v1:a", "pred:m:v1:zz"]) == [None, None]
        finally:
            await one.close()
            await two.close()

    asyncio.run(scenario())
    raw = db.get("pred:m:v1:a")
    assert unseal(raw)[0] == b"scores" and 0 < db.ttl("pred:m:v1:a") <= 30


def test_concurrent_lookups_share_one_mget_and_stores_one_pipeline(jobs_redis, db):
    db.config_resetstat()

    async def scenario():
        cache = RedisCache(jobs_redis.url, 1.0, 1.0)
        try:
            await asyncio.gather(*(cache.set(f"pred:k{n}", f"v{n}".encode(), 60) for n in range(20)))
            before = db.info("commandstats")
            found = await asyncio.gather(*(cache.get(f"pred:k{n}") for n in range(20)), cache.get("pred:none"))
            after = db.info("commandstats")
        finally:
            await cache.close()
        return found, before, after

    found, before, after = asyncio.run(scenario())
    assert found == [f"v{n}".encode() for n in range(20)] + [None]
    calls = lambda stats, cmd: stats.get(f"cmdstat_{cmd}", {}).get("calls", 0)  # noqa: E731
    assert calls(after, "mget") - calls(before, "mget") == 1 and calls(after, "get") == calls(before, "get")
    assert calls(before, "set") == 20  # in one pipeline (one round trip; Redis counts each SET)


def test_an_unsealed_or_foreign_value_is_a_miss(jobs_redis, db):
    db.set("pred:old", b"[]")  # a value from before entries carried their expiry

    async def scenario():
        cache = RedisCache(jobs_redis.url, 1.0, 1.0)
        try:
            return await cache.mget(["pred:old"])
        finally:
            await cache.close()

    assert asyncio.run(scenario()) == [None]


class GatedCache(RedisCache):
    """Holds its first round trip until `gate` is set, and notes what each carried."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.trips: list[tuple[int, int]] = []

    async def _send(self, keys, stores):
        self.trips.append((len(keys), len(stores)))
        if len(self.trips) == 1:
            await self.gate.wait()
        return await super()._send(keys, stores)


def test_what_arrives_while_a_round_trip_is_out_goes_together_in_the_next(jobs_redis, db):
    db.set("pred:old", b"x")

    async def scenario():
        cache = GatedCache(jobs_redis.url, 1.0, 1.0, in_flight=1)
        try:
            first = asyncio.gather(*(cache.get(f"pred:a{n}") for n in range(3)))
            await asyncio.sleep(0)  # out: the first round trip, with these three lookups
            later = []
            for n in range(4):  # four more turns, each a store and a lookup
                later.append(asyncio.ensure_future(cache.set(f"pred:b{n}", b"v", 60)))
                later.append(asyncio.ensure_future(cache.get(f"pred:b{n}")))
                await asyncio.sleep(0)
            assert cache.trips == [(3, 0)]  # nothing else went while the first was out
            cache.gate.set()
            found = await first
            rest = await asyncio.gather(*later)
        finally:
            await cache.close()
        return cache.trips, found, rest

    trips, found, rest = asyncio.run(scenario())
    assert trips == [(3, 0), (4, 4)]  # one pipeline: an MGET of four keys and four SETs
    assert found == [None, None, None]
    assert rest[1::2] == [None] * 4  # looked up in the same pipeline as, and before, their own SETs
    assert [db.get(f"pred:b{n}") is not None for n in range(4)] == [True] * 4


def test_a_refused_store_loses_no_lookup_of_the_same_round_trip(jobs_redis, db):
    from router.dataplane.shared_cache import seal

    db.set("pred:there", seal(b"value", time.time() + 60))
    errors: list[str] = []
    db.config_set("maxmemory-policy", "noeviction")
    db.config_set("maxmemory", 1)  # every write refused (OOM), reads still answered
    try:
        async def scenario():
            cache = RedisCache(jobs_redis.url, 1.0, 1.0, on_error=errors.append)
            try:
                found = await asyncio.gather(cache.get("pred:there"), cache.set("pred:new", b"v", 60),
                                             cache.get("pred:none"))
                return found, cache.available, await cache.get("pred:there")
            finally:
                await cache.close()

        found, available, after = asyncio.run(scenario())
    finally:
        db.config_set("maxmemory", 0)
    assert found == [b"value", None, None]
    assert errors == ["set"]
    assert db.get("pred:new") is None
    assert available and after == b"value"  # a full Redis still answers lookups: no back-off for a refusal


@pytest.mark.parametrize("started", [True, False], ids=["out", "not yet started"])
def test_a_round_trip_cancelled_answers_its_lookups_as_misses(jobs_redis, db, started):
    from router.dataplane.shared_cache import seal

    db.set("pred:there", seal(b"value", time.time() + 60))

    async def scenario():
        cache = GatedCache(jobs_redis.url, 1.0, 1.0)
        try:
            lookup = asyncio.ensure_future(cache.get("pred:there"))
            await asyncio.sleep(0)  # the lookup queued, its round trip made
            if started:
                await asyncio.sleep(0)  # and out, held at the gate
            [trip] = cache._tasks
            trip.cancel()  # as at shutdown
            found = await asyncio.wait_for(lookup, 2)
            cache.gate.set()
            again = await asyncio.wait_for(cache.get("pred:there"), 2)  # and the next round trip goes
        finally:
            await cache.close()
        return found, again

    assert asyncio.run(scenario()) == (None, b"value")


class FailingCache(GatedCache):
    """Its first round trip, once let go, fails as a Redis that does not answer would."""

    async def _send(self, keys, stores):
        self.trips.append((len(keys), len(stores)))
        if len(self.trips) == 1:
            await self.gate.wait()
            raise ConnectionError("no answer")
        return await RedisCache._send(self, keys, stores)


def test_what_waited_behind_a_failed_round_trip_is_a_miss_at_once(jobs_redis, db):
    errors: list[str] = []

    async def scenario():
        cache = FailingCache(jobs_redis.url, 1.0, 1.0, on_error=errors.append)
        try:
            first = asyncio.ensure_future(cache.get("pred:a"))
            await asyncio.sleep(0)
            waiting = [asyncio.ensure_future(cache.get("pred:b")), asyncio.ensure_future(cache.set("pred:c", b"v", 60))]
            await asyncio.sleep(0)
            cache.gate.set()
            found = await asyncio.wait_for(asyncio.gather(first, *waiting), 2)
        finally:
            await cache.close()
        return found, cache.trips, cache.available

    found, trips, available = asyncio.run(scenario())
    assert found == [None, None, None]
    assert trips == [(1, 0)]  # the breaker opened: what waited behind went nowhere
    assert errors == ["get"] and not available  # one failure counted, once
    assert db.get("pred:c") is None


def test_a_round_trip_whose_callers_all_went_away_sends_nothing_and_leaves_the_breaker_as_it_was():
    from devstack.processes import free_port

    errors: list[str] = []

    async def scenario():
        cache = GatedCache(f"redis://127.0.0.1:{free_port()}/0", 0.2, 5.0, on_error=errors.append)  # nothing there
        cache.gate.set()  # no round trip held
        try:
            assert await cache.get("pred:a") is None  # refused: the breaker opens
            tripped = cache.available
            cache._breaker._skip_until = 0  # its back-off over: the next round trip may go
            lookup = asyncio.ensure_future(cache.get("pred:b"))
            await asyncio.sleep(0)  # queued, its round trip made but not run
            lookup.cancel()  # the only caller goes away
            await cache.flush()
            return tripped, cache.trips, cache._breaker._backoff
        finally:
            await cache.close()

    tripped, trips, backoff = asyncio.run(scenario())
    assert not tripped and errors == ["get"]
    assert trips == [(1, 0)]  # the empty round trip sent nothing
    assert backoff > 0  # and did not count as Redis answering


def test_a_round_trip_frees_its_slot_even_when_counting_its_failure_fails(jobs_redis, db):
    from router.dataplane.shared_cache import seal

    def broken(op: str) -> None:
        raise RuntimeError("a metrics backend fault")

    async def scenario():
        cache = FailingCache(jobs_redis.url, 1.0, 0.01, on_error=broken)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: None)  # the fault surfaces in the round trip's task
        try:
            first = asyncio.ensure_future(cache.get("pred:a"))
            await asyncio.sleep(0)
            cache.gate.set()
            found = await asyncio.wait_for(first, 2)
            await asyncio.sleep(0.05)  # the breaker's back-off over
            db.set("pred:b", seal(b"v", time.time() + 60))
            return found, await asyncio.wait_for(cache.get("pred:b"), 2)
        finally:
            await cache.close()

    assert asyncio.run(scenario()) == (None, b"v")  # answered, and the next round trip still goes
