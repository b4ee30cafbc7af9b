"""The response cache: version-aware keys, Redis with fail-open back-off,
or an in-process LRU when no Redis is configured."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import OrderedDict
from typing import Protocol

from router.breaker import Breaker

log = logging.getLogger(__name__)


def cache_key(namespace: str, model: str, version: int, tensor: bytes, shape: tuple[int, ...],
              dtype: str, output_request: str) -> str:
    """namespace:model:v<version>:<sha256 of the input>:<sha256 of the output request>.

    The input part hashes the exact tensor sent to Triton (dtype, shape and
    bytes), so two requests that reach the model identically share an entry,
    and the output part hashes what was asked of the model (e.g. top_k)."""
    inp = hashlib.sha256(f"{dtype}{shape}".encode() + b"\0" + tensor).hexdigest()
    out = hashlib.sha256(output_request.encode()).hexdigest()[:16]
    return f"{namespace}:{model}:v{version}:{inp}:{out}"


def jittered_ttl(ttl: int, jitter: float, rng: random.Random = random.Random()) -> int:
    """Spread expiries so that entries written together do not expire together."""
    return max(1, int(ttl * (1 + rng.uniform(-jitter, jitter))))


class Cache(Protocol):
    backend: str

    async def get(self, key: str) -> bytes | None: ...
    async def mget(self, keys: list[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: int) -> None: ...
    async def healthy(self) -> bool: ...
    async def close(self) -> None: ...


class LRUCache:
    """In-process, bounded, with per-entry expiry."""

    backend = "memory"

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [await self.get(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self._data[key] = (time.monotonic() + ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()


class RedisCache:
    """Redis through one redis-py asyncio pool. Fails open: any error or
    timeout is a miss, and after an error Redis is skipped for a back-off
    that doubles up to `backoff_max` so requests do not each wait on a dead
    server; the first success after it closes the circuit again."""

    backend = "redis"

    def __init__(self, url: str, timeout: float, backoff_max: float, on_error=None) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry_on_timeout=False, health_check_interval=0, max_connections=256,
        )
        self._breaker = Breaker("redis cache", "serving without the cache", backoff_max, log)
        self._on_error = on_error or (lambda op: None)

    @property
    def available(self) -> bool:
        return self._breaker.available

    def _failed(self, op: str, exc: Exception) -> None:
        self._on_error(op)
        self._breaker.failed(op, exc)

    def _succeeded(self) -> None:
        self._breaker.succeeded()

    async def get(self, key: str) -> bytes | None:
        return (await self.mget([key]))[0]

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        if not self.available:
            return [None] * len(keys)
        try:
            values = await (self._client.get(keys[0]) if len(keys) == 1 else self._client.mget(keys))
        except Exception as exc:  # redis-py raises several families; all mean "no cache now"
            self._failed("get", exc)
            return [None] * len(keys)
        self._succeeded()
        return [values] if len(keys) == 1 else list(values)

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        if not self.available:
            return
        try:
            await self._client.set(key, value, ex=ttl)
        except Exception as exc:
            self._failed("set", exc)
            return
        self._succeeded()

    async def healthy(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        await self._client.aclose()
