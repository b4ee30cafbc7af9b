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
