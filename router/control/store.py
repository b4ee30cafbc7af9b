"""Where rollout states live: Redis, shared by every replica (a JSON value per
model, changed under WATCH so that each change gets the next revision, and
announced on a channel), or this process's memory without Redis. A sync task
in every router and worker applies each change to its routing at once, and
re-reads everything every CONTROL_REFRESH_S in case a message was missed."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from router.control.controller import Controller, LocalLease, RedisLease
from router.control.figures import Flusher, MemoryFigures, RedisFigures
from router.control.state import Rollout
from router.settings import Settings

log = logging.getLogger(__name__)

CHANNEL = "control:rollouts"
PREFIX = "control:rollout:"
MODELS = "control:models"  # the set of models with a state: listed without a SCAN over the keyspace
VERDICT = "control:verdict:"

Apply = Callable[[str, Rollout], None]
Transition = Callable[[Rollout], Rollout]


class MemoryStore:
    """One process's states: a router without Redis."""

    shared = False

    def __init__(self) -> None:
        self._states: dict[str, Rollout] = {}
        self._verdicts: dict[str, dict] = {}

    async def get(self, model: str) -> Rollout | None:
        state = self._states.get(model)  # a copy, as Redis gives: the caller may change it
        return state.model_copy(deep=True) if state is not None else None

    async def all(self) -> dict[str, Rollout]:
        return {m: s.model_copy(deep=True) for m, s in self._states.items()}

    async def update(self, model: str, seed: Rollout, transition: Transition) -> Rollout:
        updated = transition(self._states.get(model) or seed)
        self._states[model] = updated
        return updated

    async def transition(self, model: str, revision: int, transition: Transition) -> Rollout | None:
        current = self._states.get(model)
        if current is None or current.revision != revision:
            return None
        return await self.update(model, current, transition)

    async def put_verdict(self, model: str, verdict: dict) -> None:
        self._verdicts[model] = verdict

    async def verdict(self, model: str) -> dict | None:
        return self._verdicts.get(model)

    async def close(self) -> None:
        pass


class RedisStore:
    shared = True

    def __init__(self, url: str, timeout: float) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        # The subscription waits for announcements as long as there are none (no read timeout);
        # a PING every 10 s finds a dead connection, and the listener then subscribes again.
        self.subscriber = aioredis.Redis.from_url(url, socket_connect_timeout=timeout, health_check_interval=10)

    async def get(self, model: str) -> Rollout | None:
        raw = await self.client.get(PREFIX + model)
        return Rollout.model_validate_json(raw) if raw else None

    async def all(self) -> dict[str, Rollout]:
        models = sorted(m.decode() for m in await self.client.smembers(MODELS))
        values = await self.client.mget([PREFIX + m for m in models]) if models else []
        states = (Rollout.model_validate_json(v) for v in values if v)
        return {s.model: s for s in states}

    async def update(self, model: str, seed: Rollout, transition: Transition,
                     revision: int | None = None) -> Rollout | None:
        """The next revision, written only if nobody changed the model meanwhile
        (else done again on what they wrote); with `revision`, only if the stored
        state is still that revision (else None)."""
        from redis.exceptions import WatchError

        key = PREFIX + model
        async with self.client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    current = Rollout.model_validate_json(raw) if raw else seed
                    if revision is not None and (raw is None or current.revision != revision):
                        return None
                    updated = transition(current)
                    pipe.multi()
                    pipe.set(key, updated.model_dump_json())
                    pipe.sadd(MODELS, model)
                    pipe.publish(CHANNEL, model)
                    await pipe.execute()
                    return updated
                except WatchError:
                    continue

    async def transition(self, model: str, revision: int, transition: Transition) -> Rollout | None:
        return await self.update(model, None, transition, revision)  # type: ignore[arg-type]

    async def put_verdict(self, model: str, verdict: dict) -> None:
        import orjson

        await self.client.set(VERDICT + model, orjson.dumps(verdict), ex=86_400)

    async def verdict(self, model: str) -> dict | None:
        import orjson

        raw = await self.client.get(VERDICT + model)
        return orjson.loads(raw) if raw else None

    async def close(self) -> None:
        await self.client.aclose()
        await self.subscriber.aclose()


class RolloutSync:
    """Applies every stored state to this process's routing: at start, on each
    announcement, and every `refresh_s`."""

    def __init__(self, store, apply: Apply, refresh_s: float) -> None:
        self.store = store
        self._apply = apply
        self.refresh_s = refresh_s
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._seq = 0  # counts applications; a model's last one, so that a slow re-read never undoes a newer one
        self._applied: dict[str, int] = {}

    def apply(self, model: str, state: Rollout, read_at: int | None = None) -> None:
        """Applies `state`, unless it was read (at `read_at`) before a newer
        application of the same model (a re-read that raced an announcement)."""
        if read_at is not None and self._applied.get(model, -1) > read_at:
            return
        self._seq += 1
        self._applied[model] = self._seq
        self._apply(model, state)

    async def start(self) -> None:
        try:
            await self.reload()
        except Exception as exc:  # Redis down at start: the settings' routes serve until it is back
            log.warning("cannot read the rollout states: %s", exc)
        if self.store.shared:
            self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._poll())]

    async def reload(self) -> None:
        read_at = self._seq
        for model, state in (await self.store.all()).items():
            self.apply(model, state, read_at)

    async def _one(self, model: str) -> None:
        read_at = self._seq
        state = await self.store.get(model)
        if state is not None:
            self.apply(model, state, read_at)

    async def _listen(self) -> None:
        backoff = 0.25
        while not self._stopping:
            pubsub = self.store.subscriber.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                await self.reload()  # whatever changed while not subscribed
                backoff = 0.25
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._one(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # redis-py can turn a cancelled read into a connection error: stopping wins over retrying
                current = asyncio.current_task()
                if self._stopping or (current is not None and current.cancelling()):
                    raise asyncio.CancelledError() from exc
                log.warning("rollout announcements interrupted (%s); resubscribing in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:  # bounded: a cancelled read must not hold the shutdown
                    await asyncio.wait_for(pubsub.aclose(), 1.0)
                except (asyncio.TimeoutError, Exception):
                    pass

    async def _poll(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.reload()
            except Exception as exc:
                log.warning("cannot re-read the rollout states: %s", exc)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)


def open_store(settings: Settings):
    url = settings.control_url
    return RedisStore(url, settings.jobs_redis_timeout_s) if url else MemoryStore()


@dataclass
class Control:
    """What the admin API works with: the states, the figures, and how a state
    is applied to this process (its routing and gauges) at once."""

    store: object
    figures: object
    apply: Apply
    flusher: Flusher
    controller: Controller | None = None


@asynccontextmanager
async def open_control(settings: Settings, service, controller: bool = False) -> AsyncIterator[Control]:
    """The rollout store, with a sync task applying its states to `service`'s
    routing, the flusher of this process's figures, and (`controller`) a
    candidate for the controller's lease."""
    store = open_store(settings)
    metrics = service.metrics
    if isinstance(store, RedisStore):
        figures = RedisFigures(store.client, settings.rollout_figures_ttl_s)
        lease = RedisLease(store.client, settings.rollout_lease_s)
    else:
        figures, lease = MemoryFigures(), LocalLease()

    def apply(model: str, state: Rollout) -> None:
        service.versions.set_route(model, state.route())
        service.versions.set_rollout(model, state)
        metrics.observe_rollout(state)

    sync = RolloutSync(store, apply, settings.control_refresh_s)
    flusher = Flusher(service.versions.figures, figures, settings.rollout_figures_flush_s)
    ctl = Controller(store, figures, lease, service, settings, metrics, sync.apply) if controller else None
    try:
        await sync.start()
        flusher.start()
        if ctl is not None:
            ctl.start()
        yield Control(store, figures, sync.apply, flusher, ctl)
    finally:
        if ctl is not None:
            await ctl.stop()
        await flusher.stop()
        await sync.stop()
        await store.close()
