"""The shared tier of the response cache: Redis, shared by every replica,
failing open with a back-off, behind the in-process LRU of cache.py (the two together: tiered_cache.py). Each
Redis entry carries its absolute expiry, which the local tier keeps too.
Concurrent lookups and stores share round trips: one pipeline of an MGET and
SETs, at most `in_flight` at once."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import struct
import time
from typing import Callable

from router.breaker import Breaker

log = logging.getLogger(__name__)


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
    closes the circuit again.

    Lookups and stores share round trips, adaptively: at most `in_flight`
    round trips run at once, each one pipeline of a single MGET (every
    lookup waiting) and the SETs waiting. A round trip starts at the end of
    the event-loop turn that queued its first item when a slot is free (no
    wait at low load); under load, what arrives meanwhile goes with the next
    one, so the busier the router, the fewer sends per request (a loopback
    send costs tens of microseconds here, the largest share of a miss)."""

    backend = "redis"

    def __init__(self, url: str, timeout: float, backoff_max: float, on_error=None,
                 clock: Callable[[], float] = time.time, in_flight: int = 1) -> None:
        import redis.asyncio as aioredis

        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry_on_timeout=False, health_check_interval=0, max_connections=256,
        )
        self._breaker = Breaker("redis cache", "serving without the cache", backoff_max, log)
        self._on_error = on_error or (lambda op: None)
        self.clock = clock
        self.in_flight = in_flight
        self._lookups: list[tuple[list[str], asyncio.Future]] = []
        self._stores: list[tuple[str, bytes, int]] = []
        self._stored: asyncio.Future | None = None
        self._running = 0  # round trips started and not finished
        self._refusing = False  # Redis answered the last stores with an error
        self._next: asyncio.Task | None = None  # the round trip that will take what is queued now
        self._tasks: set[asyncio.Task] = set()

    @property
    def available(self) -> bool:
        return self._breaker.available

    def _failed(self, op: str, exc: Exception) -> None:
        self._on_error(op)
        self._breaker.failed(op, exc)

    def _succeeded(self) -> None:
        self._breaker.succeeded()

    def _refused(self, exc: Exception) -> None:
        """Redis answered a store with an error (say, out of memory): counted, and
        logged once until a store succeeds again; lookups go on (the breaker is for
        a Redis that does not answer)."""
        self._on_error("set")
        if not self._refusing:
            self._refusing = True
            log.warning("redis cache refused a store (%s); serving without storing until it takes one again",
                        exc)

    def _kick(self) -> None:
        """A round trip for what is queued, unless one will take it already or every slot is busy
        (the last one to finish starts the next)."""
        if self._next is None and self._running < self.in_flight:
            self._running += 1
            # shared by every caller it answers: a context of its own, not the kicking request's
            task = self._next = asyncio.get_running_loop().create_task(self._round_trip(),
                                                                       context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _take(self) -> tuple[list[tuple[list[str], asyncio.Future]], list[tuple[str, bytes, int]],
                             asyncio.Future | None]:
        """What is queued, for one round trip (lookups whose callers went away left out)."""
        lookups = [(keys, future) for keys, future in self._lookups if not future.done()]
        taken = lookups, self._stores, self._stored
        self._lookups, self._stores, self._stored = [], [], None
        return taken

    def _done(self, lookups, stored: asyncio.Future | None, values: list | None) -> None:
        """A round trip over (or never made): its slot free, its stores settled, its lookups answered."""
        self._running -= 1
        if stored is not None and not stored.done():
            stored.set_result(None)
        self._answer(lookups, values)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._next is task:  # cancelled before it ran (shutdown): what it would have taken, answered
            self._next = None
            lookups, _, stored = self._take()
            self._done(lookups, stored, None)

    async def fetch(self, keys: list[str]) -> list[tuple[bytes, float] | None]:
        """Each key's (value, expiry), or None; in one MGET with every other
        lookup waiting for the same round trip."""
        if not self.available:
            return [None] * len(keys)
        future = asyncio.get_running_loop().create_future()
        self._lookups.append((keys, future))
        self._kick()
        return await future

    async def _round_trip(self) -> None:
        self._next = None
        lookups, stores, stored = self._take()
        keys = [k for ks, _ in lookups for k in ks]
        if not self.available or not (keys or stores):
            # the breaker opened while these waited (no Redis for them), or every caller went
            # away: nothing is sent, and the breaker learns nothing
            self._done(lookups, stored, None)
            self._again()
            return
        values = None
        try:  # whatever happens, the slot is freed and the lookups answered (as misses without values)
            values, get_error, set_error = await self._send(keys, stores)
            if get_error is not None:
                self._failed("get", get_error)
            else:
                self._succeeded()
            if set_error is not None:
                self._refused(set_error)
            elif stores:
                self._refusing = False
        except asyncio.CancelledError:  # shutdown: answered as misses, and nothing more is sent
            values = None
            raise
        except Exception as exc:  # redis-py raises several families; all mean "no cache now"
            values = None
            self._failed("get" if keys else "set", exc)
        finally:
            self._done(lookups, stored, values)
        self._again()

    def _again(self) -> None:
        if self._lookups or self._stores:
            self._kick()

    def _answer(self, lookups: list[tuple[list[str], asyncio.Future]], values: list | None) -> None:
        now, i = self.clock(), 0
        for ks, future in lookups:
            found = []
            for raw in (values[i:i + len(ks)] if values is not None else [None] * len(ks)):
                entry = unseal(raw)
                found.append(entry if entry is not None and entry[1] > now else None)
            i += len(ks)
            if not future.done():
                future.set_result(found)

    async def _send(self, keys: list[str], stores: list[tuple[str, bytes, int]]
                    ) -> tuple[list | None, Exception | None, Exception | None]:
        """One round trip: the values of `keys` (None when Redis answered the MGET
        with an error), that error, and the first error Redis answered a store with."""
        if not stores:
            if not keys:
                return [], None, None
            return (list(await self._client.mget(keys)) if len(keys) > 1 else [await self._client.get(keys[0])],
                    None, None)
        async with self._client.pipeline(transaction=False) as pipe:
            if keys:
                pipe.mget(keys)
            for key, sealed, ttl in stores:
                pipe.set(key, sealed, ex=ttl)
            replies = await pipe.execute(raise_on_error=False)
        values, get_error = None, None
        if keys:
            got, replies = replies[0], replies[1:]
            if isinstance(got, Exception):
                get_error = got
            else:
                values = list(got)
        return values, get_error, next((r for r in replies if isinstance(r, Exception)), None)

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [None if e is None else e[0] for e in await self.fetch(keys)]

    async def get(self, key: str) -> bytes | None:
        return (await self.mget([key]))[0]

    async def set(self, key: str, value: bytes, ttl: int) -> None:
        """Stored with the next round trip (a failure is logged and counted, never raised)."""
        done = self.store(key, seal(value, self.clock() + ttl), ttl)
        if done is not None:
            await asyncio.shield(done)

    def store(self, key: str, sealed: bytes, ttl: int) -> asyncio.Future | None:
        """Queues a store for the next round trip without waiting for it; the
        future it returns is done once that round trip has run."""
        if not self.available:
            return None
        if self._stored is None:
            self._stored = asyncio.get_running_loop().create_future()
        self._stores.append((key, sealed, ttl))
        self._kick()
        return self._stored

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
