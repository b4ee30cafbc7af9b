"""Adaptive batching of backend calls, in the spirit of Clipper's: items of
the same key that arrive while the backend is busy go together as one call.

Per key, up to `max_in_flight` calls run at once. An item that finds a free
slot is sent at once, alone (no latency is added at low load); one that finds
every slot taken waits, and when a call completes, everything waiting (up to
`max_batch` rows, in arrival order, an item never split) goes as the next
call. The batch size thus follows the load: the slower the backend and the
more traffic, the larger the batches. With `window_s`, a batch that is not
full waits until its oldest item is that old before it goes, even when a slot
is free (Triton's `max_queue_delay`); off by default.

A call gets the items as submitted, so an item can carry what its caller
needs back (a request id, to log against the batch's own). It returns one
result per item, in order; if it raises, every item of that batch gets the
exception, and if it returns another number of results, every item gets a
RuntimeError. Calls run in tasks of their own: a caller that goes away
cancels only its own wait (an item not yet sent is dropped; one sent has its
result discarded). Waiting items are bounded per key (`BatcherFull`)."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Hashable, Iterable, TypeVar

K = TypeVar("K", bound=Hashable)
I = TypeVar("I")
R = TypeVar("R")
log = logging.getLogger(__name__)


class BatcherFull(Exception):
    """Too many items already wait for this key: the backend is not keeping up."""


class BatcherClosed(Exception):
    """The batcher was closed before the item's call completed."""


@dataclass(eq=False)
class _Entry(Generic[I, R]):
    item: I
    rows: int
    deadline: float  # when a window is set: the latest this item waits for a fuller batch
    future: asyncio.Future[R]
    queued: bool = True  # False once taken into a call (or dropped)


@dataclass(eq=False)
class _Lane(Generic[I, R]):
    """One key's waiting items (cancelled ones are skipped when taken) and calls in flight."""

    queue: deque[_Entry[I, R]] = field(default_factory=deque)
    waiting: int = 0  # live items in the queue
    rows: int = 0  # their rows
    in_flight: int = 0
    timer: asyncio.TimerHandle | None = None
    max_batch: int = 1  # rows per call, read when the lane opens


class Batcher(Generic[K, I, R]):
    def __init__(self, call: Callable[[K, list[I]], Awaitable[list[R]]], max_batch: int | Callable[[K], int],
                 window_s: float | None = None, max_queue: int = 1024, max_in_flight: int = 2,
                 on_batch: Callable[[K, int, int], None] | None = None) -> None:
        """`call(key, items)`: one backend call for items of one key, one result
        each in order. `max_batch`: rows per call, or a function of the key
        (e.g. the model's own limit), asked whenever a key's lane opens.
        `on_batch(key, items, rows)`: told of every call made."""
        if (isinstance(max_batch, int) and max_batch < 1) or max_queue < 1 or max_in_flight < 1:
            raise ValueError("max_batch, max_queue and max_in_flight must be at least 1")
        if window_s is not None and window_s < 0:
            raise ValueError("window_s must not be negative")
        self.call = call
        self.max_batch = max_batch
        self.window_s = window_s or 0.0
        self.max_queue = max_queue
        self.max_in_flight = max_in_flight
        self.on_batch = on_batch
        self._lanes: dict[K, _Lane[I, R]] = {}
        self._calls: dict[asyncio.Task, list[_Entry[I, R]]] = {}  # each call in flight, with its items
        self._closed = False

    def __len__(self) -> int:
        """Keys with items waiting or calls in flight."""
        return len(self._lanes)

    def waiting(self, key: K) -> int:
        lane = self._lanes.get(key)
        return lane.waiting if lane else 0

    def in_flight(self, key: K) -> int:
        lane = self._lanes.get(key)
        return lane.in_flight if lane else 0

    async def submit(self, key: K, item: I, rows: int = 1) -> R:
        """The item's result, from a call made alone or with others of `key`.
        Raises what that call raised, BatcherFull, or BatcherClosed."""
        if self._closed:
            raise BatcherClosed("the batcher is closed")
        if rows < 1:
            raise ValueError(f"an item has at least one row, not {rows}")
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(max_batch=self._max_batch(key))
        elif lane.waiting >= self.max_queue:
            raise BatcherFull(f"{lane.waiting} items already wait for a batch")
        loop = asyncio.get_running_loop()
        entry: _Entry[I, R] = _Entry(item, rows, loop.time() + self.window_s, loop.create_future())
        lane.queue.append(entry)
        lane.waiting += 1
        lane.rows += rows
        self._pump(key, lane)
        try:
            return await entry.future
        except asyncio.CancelledError:
            self._abandon(key, lane, entry)
            raise

    async def close(self) -> None:
        """Fails every waiting item and every call in flight with BatcherClosed;
        returns once no task of the batcher is left."""
        self._closed = True
        for lane in self._lanes.values():
            if lane.timer is not None:
                lane.timer.cancel()
            for entry in lane.queue:
                entry.queued = False
            _fail(lane.queue, BatcherClosed("the batcher closed before the item was sent"))
            lane.queue.clear()
            lane.waiting = lane.rows = 0
        calls = list(self._calls.items())
        for task, _ in calls:
            task.cancel()
        await asyncio.gather(*(task for task, _ in calls), return_exceptions=True)
        for _, batch in calls:  # a call cancelled before it began never saw its items
            _fail(batch, BatcherClosed("the batcher closed during the call"))
        self._lanes.clear()

    # --- internals -------------------------------------------------------------

    def _max_batch(self, key: K) -> int:
        limit = self.max_batch(key) if callable(self.max_batch) else self.max_batch
        if limit < 1:
            raise ValueError(f"max_batch for {key!r} must be at least 1, not {limit}")
        return limit

    def _pump(self, key: K, lane: _Lane[I, R], timer_due: float | None = None) -> None:
        """Starts calls while a slot is free and something waits (and, with a
        window, the batch is full or its oldest item has waited long enough)."""
        while lane.in_flight < self.max_in_flight and lane.waiting:
            head = self._head(lane)
            if self.window_s and lane.rows < lane.max_batch and not self._due(head, timer_due):
                if lane.timer is None:
                    loop = asyncio.get_running_loop()
                    lane.timer = loop.call_at(head.deadline, self._fire, key, head.deadline)
                return
            self._start(key, lane, self._take(lane))
        self._forget_if_idle(key, lane)

    def _due(self, head: _Entry[I, R], timer_due: float | None) -> bool:
        # A timer may fire a clock tick early: the deadline it was set for counts as reached.
        return head.deadline <= asyncio.get_running_loop().time() or (
            timer_due is not None and head.deadline <= timer_due)

    def _fire(self, key: K, deadline: float) -> None:
        lane = self._lanes.get(key)
        if lane is not None:
            lane.timer = None
            self._pump(key, lane, deadline)

    @staticmethod
    def _head(lane: _Lane[I, R]) -> _Entry[I, R]:
        """The oldest live entry, dropping abandoned ones before it."""
        while not lane.queue[0].queued:
            lane.queue.popleft()
        return lane.queue[0]

    def _take(self, lane: _Lane[I, R]) -> list[_Entry[I, R]]:
        """Live entries from the front, in order, up to max_batch rows (or one
        bigger item, alone)."""
        batch: list[_Entry[I, R]] = []
        rows = 0
        while lane.waiting:
            entry = self._head(lane)
            if batch and rows + entry.rows > lane.max_batch:
                break
            lane.queue.popleft()
            entry.queued = False
            lane.waiting -= 1
            lane.rows -= entry.rows
            batch.append(entry)
            rows += entry.rows
        if not lane.waiting:
            lane.queue.clear()  # only abandoned entries may be left
        return batch

    def _start(self, key: K, lane: _Lane[I, R], batch: list[_Entry[I, R]]) -> None:
        lane.in_flight += 1
        if self.on_batch is not None:
            try:
                self.on_batch(key, len(batch), sum(e.rows for e in batch))
            except Exception:
                log.exception("on_batch hook failed")
        # a context of its own: not that of whichever caller's submit or call happened to start it
        task = asyncio.get_running_loop().create_task(self._run(key, lane, batch), context=contextvars.Context())
        self._calls[task] = batch
        task.add_done_callback(self._calls.pop)

    async def _run(self, key: K, lane: _Lane[I, R], batch: list[_Entry[I, R]]) -> None:
        try:
            results = await self.call(key, [e.item for e in batch])
        except asyncio.CancelledError:
            error: BaseException = (BatcherClosed("the batcher closed during the call") if self._closed
                                    else RuntimeError(f"the batched call for {key!r} was cancelled"))
            _fail(batch, error)
            raise
        except BaseException as exc:  # each caller gets it and falls back as it would alone
            _fail(batch, exc)
        else:
            count = len(results) if isinstance(results, (list, tuple)) else None
            if count != len(batch):
                got = f"{count} results" if count is not None else f"a {type(results).__name__}"
                _fail(batch, RuntimeError(f"the batched call for {key!r} returned {got} for {len(batch)} items"))
            else:
                for entry, result in zip(batch, results):
                    if not entry.future.done():  # its caller may have gone away
                        entry.future.set_result(result)
        finally:
            lane.in_flight -= 1
            if not self._closed:
                self._pump(key, lane)

    def _abandon(self, key: K, lane: _Lane[I, R], entry: _Entry[I, R]) -> None:
        """Its caller went away: a waiting item is dropped; one in a call has
        its result discarded."""
        if not entry.queued:
            return
        entry.queued = False
        lane.waiting -= 1
        lane.rows -= entry.rows
        if not lane.waiting:
            lane.queue.clear()
        elif len(lane.queue) > 2 * lane.waiting + 16:  # many abandoned: compact (amortised O(1))
            lane.queue = deque(e for e in lane.queue if e.queued)
        self._forget_if_idle(key, lane)

    def _forget_if_idle(self, key: K, lane: _Lane[I, R]) -> None:
        if not lane.waiting and not lane.in_flight and self._lanes.get(key) is lane:
            if lane.timer is not None:
                lane.timer.cancel()
            del self._lanes[key]


def _fail(batch: Iterable[_Entry], error: BaseException) -> None:
    for entry in batch:
        if not entry.future.done():
            entry.future.set_exception(error)
