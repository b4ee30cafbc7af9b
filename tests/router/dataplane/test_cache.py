import asyncio
import random

import numpy as np

from router.dataplane.cache import LRUCache, cache_key, jittered_ttl


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
