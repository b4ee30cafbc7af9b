"""The response cache: version-aware keys, in two tiers. An in-process LRU
(bounded by entries and bytes) answers a repeated hit with no network round
trip; behind it Redis, shared by every replica, fails open with a back-off.
Entries are keyed by immutable model versions, so they never need
invalidating: each carries its absolute expiry, which the local tier keeps
too. Concurrent Redis lookups made in one event-loop turn go as one MGET, and
stores as one pipeline."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import struct
import time
from collections import OrderedDict
from typing import Callable, Protocol

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
    """In-process, bounded by entries and bytes, each entry with its absolute
    expiry (wall-clock seconds, as the Redis entries carry)."""

    backend = "memory"

    def __init__(self, max_entries: int, max_bytes: int = 1 << 62, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def lookup(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self.clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: str, value: bytes, expires: float) -> None:
        if self.max_entries <= 0 or len(value) > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        self._data[key] = (expires, value)
        self.bytes += len(value)
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            old, (_, dropped) = self._data.popitem(last=False)
            self.bytes -= len(dropped)

    def _drop(self, key: str) -> None:
        _, value = self._data.pop(key)
        self.bytes -= len(value)

    async def get(self, key: str) -> bytes | None:
        return self.lookup(key)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.lookup(k) for k in keys]

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        self.put(key, value, self.clock() + ttl)

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._data.clear()
        self.bytes = 0


# A Redis entry: its absolute expiry (milliseconds since the epoch), then the value.
HEADER = struct.Struct(">Q")


def seal(value: bytes, expires: float) -> bytes:
    return HEADER.pack(int(expires * 1000)) + value


def unseal(raw: bytes | None) -> tuple[bytes, float] | None:
    """(value, expiry) of a stored entry; anything shorter than its header is a miss."""
    if raw is None or len(raw) <= HEADER.size:
        return None
    return raw[HEADER.size:], HEADER.unpack_from(raw)[0] / 1000


class RedisCache:
    """Redis through one redis-py asyncio pool (hiredis parses the replies when
    installed). Fails open: any error or timeout is a miss, and after an error
    Redis is skipped for a back-off that doubles up to `backoff_max` so
    requests do not each wait on a dead server; the first success after it
    closes the circuit again. Lookups made in the same event-loop turn go as
    one MGET, stores as one pipeline."""

    backend = "redis"

    def __init__(self, url: str, timeout: float, backoff_max: float, on_error=None,
                 clock: Callable[[], float] = time.time) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry_on_timeout=False, health_check_interval=0, max_connections=256,
        )
        self._breaker = Breaker("redis cache", "serving without the cache", backoff_max, log)
        self._on_error = on_error or (lambda op: None)
        self.clock = clock
        self._lookups: list[tuple[list[str], asyncio.Future]] = []
        self._stores: list[tuple[str, bytes, int]] = []
        self._stored: asyncio.Future | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def available(self) -> bool:
        return self._breaker.available

    def _failed(self, op: str, exc: Exception) -> None:
        self._on_error(op)
        self._breaker.failed(op, exc)

    def _succeeded(self) -> None:
        self._breaker.succeeded()

    def _soon(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fetch(self, keys: list[str]) -> list[tuple[bytes, float] | None]:
        """Each key's (value, expiry), or None; joined with every other lookup
        made in this event-loop turn into one MGET."""
        if not self.available:
            return [None] * len(keys)
        future = asyncio.get_running_loop().create_future()
        if not self._lookups:
            self._soon(self._lookup_all)
        self._lookups.append((keys, future))
        return await future

    async def _lookup_all(self) -> None:
        waiting, self._lookups = self._lookups, []
        keys = [k for ks, _ in waiting for k in ks]
        try:
            values = await (self._client.mget(keys) if len(keys) > 1 else self._client.get(keys[0]))
            values = [values] if len(keys) == 1 else list(values)
        except Exception as exc:  # redis-py raises several families; all mean "no cache now"
            self._failed("get", exc)
            values = [None] * len(keys)
        else:
            self._succeeded()
        now, i = self.clock(), 0
        for ks, future in waiting:
            found = []
            for raw in values[i:i + len(ks)]:
                entry = unseal(raw)
                found.append(entry if entry is not None and entry[1] > now else None)
            i += len(ks)
            if not future.done():
                future.set_result(found)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [None if e is None else e[0] for e in await self.fetch(keys)]

    async def get(self, key: str) -> bytes | None:
        return (await self.mget([key]))[0]

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Stored with this turn's pipeline (a failure is logged and counted, never raised)."""
        done = self.store(key, seal(value, self.clock() + ttl), ttl)
        if done is not None:
            await asyncio.shield(done)

    def store(self, key: str, sealed: bytes, ttl: int) -> asyncio.Future | None:
        """Queues a store for this turn's pipeline without waiting for it; the
        future it returns is done once the pipeline has run."""
        if not self.available:
            return None
        if not self._stores:
            self._stored = asyncio.get_running_loop().create_future()
            self._soon(self._store_all)
        self._stores.append((key, sealed, ttl))
        return self._stored

    async def _store_all(self) -> None:
        stores, self._stores, done = self._stores, [], self._stored
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, sealed, ttl in stores:
                    pipe.set(key, sealed, ex=ttl)
                await pipe.execute()
        except Exception as exc:
            self._failed("set", exc)
        else:
            self._succeeded()
        finally:
            if not done.done():
                done.set_result(None)

    async def flush(self) -> None:
        """Waits for the lookups and stores queued so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    async def healthy(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.flush(), 2.0)
        except (asyncio.TimeoutError, Exception):
            pass
        await self._client.aclose()


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

    async def get(self, key: str) -> bytes | None:
        value = self.local.lookup(key)
        if value is not None:
            self.on_hit("local")
            return value
        return (await self.mget([key]))[0]

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
