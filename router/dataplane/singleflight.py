"""Identical concurrent work done once: the first caller starts it, the others
await the same result (or the same exception). Nothing is kept afterwards,
so an error is never remembered. The work runs as its own task, so a caller
that goes away does not cancel it for the others: each caller waits on a
future of its own, which the flight answers directly when it lands (one
event-loop turn to resume a caller, where a shield over the shared result
takes two).

`then` runs after the result is handed out (e.g. storing it in a cache):
callers do not wait for it, but the flight stays open until it is done and
`linger` seconds more, so an identical request whose cache lookup was sent
before the store landed still joins instead of calling again."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class SingleFlight(Generic[T]):
    def __init__(self, linger: float = 1.0, cancelled: Callable[[], Exception] | None = None) -> None:
        """`cancelled`: the error callers get when the work itself was cancelled
        (a closed channel, shutdown) rather than they: an answer, where a
        cancellation a caller did not ask for would leave it none to give."""
        self.linger = linger
        self.cancelled = cancelled or (lambda: RuntimeError("the shared work was cancelled"))
        self._inflight: dict[str, asyncio.Future[T]] = {}
        self._waiters: dict[asyncio.Future[T], list[asyncio.Future[T]]] = {}  # per open flight

    def __len__(self) -> int:
        return len(self._inflight)

    def pending(self, key: str) -> asyncio.Future[T] | None:
        """The flight for `key`, if one is open: join it without asking the cache."""
        return self._inflight.get(key)

    def join(self, flight: asyncio.Future[T]) -> asyncio.Future[T]:
        """What to await for a flight's result (one that `pending` gave): the
        flight itself once it has landed, else a future of the caller's own,
        so that a caller that goes away cancels only its own wait."""
        waiters = self._waiters.get(flight)
        if waiters is None:  # landed (or forgotten): awaiting a done future does not suspend
            return flight
        waiter = flight.get_loop().create_future()
        waiters.append(waiter)
        return waiter

    async def do(self, key: str, work: Callable[[], Awaitable[T]],
                 then: Callable[[T], Awaitable[None]] | None = None) -> tuple[T, bool]:
        """(result, shared): shared is True for callers that joined a flight."""
        result = self._inflight.get(key)
        shared = result is not None
        if result is None:
            result = asyncio.get_running_loop().create_future()
            self._inflight[key] = result
            self._waiters[result] = []
            asyncio.ensure_future(self._fly(key, result, work, then))
        return await self.join(result), shared

    async def _fly(self, key: str, result: asyncio.Future[T], work, then) -> None:
        try:
            value = await work()
        except BaseException as exc:  # handed to every caller, then forgotten at once
            handed = exc if isinstance(exc, Exception) else self.cancelled()
            result.set_exception(handed)
            result.exception()  # retrieved, in case every caller went away
            for waiter in self._waiters.pop(result):
                if not waiter.done():
                    waiter.set_exception(handed)
            self._forget(key, result)
            if handed is not exc:
                raise
            return
        result.set_result(value)
        for waiter in self._waiters.pop(result):
            if not waiter.done():  # a caller gone away cancelled its own
                waiter.set_result(value)
        try:
            if then is not None:
                await then(value)
        except Exception:
            log.exception("after-flight step failed for %s", key)
        finally:
            asyncio.get_running_loop().call_later(self.linger, self._forget, key, result)

    def _forget(self, key: str, result: asyncio.Future[T]) -> None:
        if self._inflight.get(key) is result:
            del self._inflight[key]
