"""The response cache's two tiers together: the in-process LRU of cache.py
in front of the shared Redis tier of shared_cache.py. Entries are keyed by
immutable versions, so neither tier is ever invalidated; a Redis hit is kept
locally until the expiry its Redis entry carries."""

from __future__ import annotations

from typing import Callable

from router.dataplane.cache import LRUCache
from router.dataplane.shared_cache import RedisCache, seal


class TieredCache:
    """The in-process tier in front of Redis: a local hit costs no round trip;
    a Redis hit is kept locally until the entry's own expiry."""

    backend = "redis"

    def __init__(self, local: LRUCache, remote: RedisCache, on_hit: Callable[[str], None] | None = None) -> None:
        self.local = local
        self.remote = remote
        self.on_hit = on_hit or (lambda tier: None)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        found = [self.local.lookup(k) for k in keys]
        missing = [i for i, v in enumerate(found) if v is None]
        for _ in range(len(keys) - len(missing)):
            self.on_hit("local")
        if missing:
            for i, entry in zip(missing, await self.remote.fetch([keys[i] for i in missing])):
                if entry is not None:
                    value, expires = entry
                    self.local.put(keys[i], value, expires)
                    found[i] = value
                    self.on_hit("redis")
        return found

    def peek(self, key: str) -> bytes | None:
        """The in-process tier's entry, without asking Redis."""
        value = self.local.lookup(key)
        if value is not None:
            self.on_hit("local")
        return value

    async def get(self, key: str) -> bytes | None:
        value = self.peek(key)
        return value if value is not None else (await self.mget([key]))[0]

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        expires = self.local.clock() + ttl
        self.local.put(key, value, expires)
        self.remote.store(key, seal(value, expires), ttl)

    @property
    def available(self) -> bool:
        return self.remote.available

    async def flush(self) -> None:
        await self.remote.flush()

    async def healthy(self) -> bool:
        return await self.remote.healthy()

    async def close(self) -> None:
        await self.local.close()
        await self.remote.close()
