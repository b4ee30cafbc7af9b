"""The response cache: version-aware keys, their expiry, and the in-process
LRU (bounded by entries and bytes). Entries are keyed by immutable model
versions, so they never need invalidating. The LRU serves alone without
Redis, and as the first tier in front of it (router/dataplane/tiered_cache.py)."""

from __future__ import annotations

import functools
import hashlib
import random
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Protocol


def cache_key(namespace: str, model: str, version: int, tensor: bytes, shape: tuple[int, ...],
              dtype: str, output_request: str) -> str:
    """namespace:model:v<version>:<sha256 of the input>:<sha256 of the output request>.

    The input part hashes the exact tensor sent to Triton (dtype, shape and
    bytes), so two requests that reach the model identically share an entry,
    and the output part hashes what was asked of the model (e.g. top_k)."""
    digest = hashlib.sha256(f"{dtype}{shape}".encode() + b"\0")
    digest.update(tensor)
    return f"{namespace}:{model}:v{version}:{digest.hexdigest()}:{output_part(output_request)}"


@functools.lru_cache(maxsize=1024)
def output_part(output_request: str) -> str:
    """The output request's part of a key: a few distinct values (top_k, the outputs asked for), each hashed once."""
    return hashlib.sha256(output_request.encode()).hexdigest()[:16]


_DTYPE_NAMES: dict = {}


def dtype_name(dtype) -> str:
    """str(dtype) ("uint8", "float32", ...), remembered: numpy builds it anew on every call."""
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype)
    return name


def jittered_ttl(ttl: int, jitter: float, rng: random.Random = random.Random()) -> int:
    """Spread expiries so that entries written together do not expire together."""
    return max(1, int(ttl * (1 + rng.uniform(-jitter, jitter))))


class Cache(Protocol):
    backend: str

    def peek(self, key: str) -> bytes | None: ...  # the in-process tier only, without awaiting
    async def get(self, key: str) -> bytes | None: ...
    async def mget(self, keys: list[str]) -> list[bytes | None]: ...
    async def set(self, key: str, value: bytes, ttl: int) -> None: ...
    async def healthy(self) -> bool: ...
    async def close(self) -> None: ...


class LRUCache:
    """In-process, bounded by entries and bytes, each entry with its absolute
    expiry (wall-clock seconds, as the Redis entries carry). A value's size
    is its length unless `put` is told another (a value that is not bytes)."""

    backend = "memory"

    def __init__(self, max_entries: int, max_bytes: int = 1 << 62, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self._data: OrderedDict[Hashable, tuple[float, Any, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def lookup(self, key: Hashable) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= self.clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return item[1]

    def put(self, key: Hashable, value: Any, expires: float, size: int | None = None) -> None:
        size = len(value) if size is None else size
        if self.max_entries <= 0 or size > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        self._data[key] = (expires, value, size)
        self.bytes += size
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            self.bytes -= self._data.popitem(last=False)[1][2]

    def _drop(self, key: Hashable) -> None:
        self.bytes -= self._data.pop(key)[2]

    def peek(self, key: str) -> bytes | None:
        return self.lookup(key)

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
