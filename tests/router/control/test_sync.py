"""RolloutSync never lets a re-read that raced a newer application undo it."""

from __future__ import annotations

import asyncio

from router.control.state import Rollout
from router.control.store import MemoryStore, RolloutSync


class SlowReads(MemoryStore):
    """A store whose reads return what was stored when they began, after `gate` opens."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def all(self):
        snapshot = await super().all()
        await self.gate.wait()
        return snapshot


def test_a_slow_reload_does_not_undo_a_newer_state():
    async def scenario():
        store = SlowReads()
        old = Rollout(model="m", revision=1, canary_version=2, canary_percent=50)
        await store.update("m", old, lambda s: s)
        applied: list[tuple[int, float]] = []
        sync = RolloutSync(store, lambda model, state: applied.append((state.revision, state.canary_percent)), 60)
        reload = asyncio.create_task(sync.reload())  # reads revision 1, then waits
        await asyncio.sleep(0)
        sync.apply("m", Rollout(model="m", revision=2, canary_version=2, canary_percent=0))  # e.g. a rollback
        store.gate.set()
        await reload
        await sync.reload()  # a re-read begun after it applies what is stored, as always
        return applied

    assert asyncio.run(scenario()) == [(2, 0.0), (1, 50.0)]


def test_the_redis_store_lists_its_states_without_scanning_the_keyspace(jobs_redis, db):
    """On a Redis shared with the cache, listing the states (every controller
    tick, every refresh) must not cost a walk over every cached entry."""
    from router.control.store import RedisStore

    db.mset({f"pred:{i}": b"x" for i in range(5000)})

    async def scenario():
        store = RedisStore(jobs_redis.url, 2.0)
        try:
            for model, percent in (("a", 10), ("b", 20)):
                seed = Rollout(model=model, revision=0, canary_version=2, canary_percent=0)
                await store.update(model, seed, lambda s, p=percent: s.model_copy(
                    update={"revision": s.revision + 1, "canary_percent": p}))
            db.config_resetstat()
            return {m: s.canary_percent for m, s in (await store.all()).items()}
        finally:
            await store.close()

    assert asyncio.run(scenario()) == {"a": 10.0, "b": 20.0}
    calls = {k: v["calls"] for k, v in db.info("commandstats").items()}
    assert "cmdstat_scan" not in calls and calls["cmdstat_smembers"] == 1 and calls["cmdstat_mget"] == 1
