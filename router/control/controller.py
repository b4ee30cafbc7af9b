"""The rollout controller: one at a time across every replica (a lease in
Redis), judging each progressing rollout every ROLLOUT_TICK_S on figures
summed across replicas, and moving it on: next step, hold, pause, promote,
or roll back at once on a breach. Every transition is written only if the
state is still the revision it judged, so that two controllers overlapping
for a moment can neither skip nor repeat a step."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from router.aio import cancel
from router.control.figures import ShadowFigures, VersionFigures, shadow_figures, version_figures
from router.control.state import Policy, Rollout

log = logging.getLogger(__name__)

LEASE_KEY = "control:lease"
# Take the lease when free, or renew it when ours; in one step.
ACQUIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisLease:
    def __init__(self, client, ttl_s: float, holder: str | None = None) -> None:
        self.client = client
        self.ttl_ms = int(ttl_s * 1000)
        self.holder = holder or holder_id()
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)

    async def hold(self) -> bool:
        return bool(await self._acquire(keys=[LEASE_KEY], args=[self.holder, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[LEASE_KEY], args=[self.holder])


class LocalLease:
    """Without Redis there is one router: it always holds the lease."""

    holder = "local"

    async def hold(self) -> bool:
        return True

    async def release(self) -> None:
        pass


@dataclass(frozen=True)
class Judgement:
    result: str  # pending | pass | hold | breach
    gate: str | None = None  # error_rate | latency | agreement | unavailable, on a breach
    reason: str | None = None


# A p99 read from fewer samples than this is little more than their maximum.
P99_SAMPLES = 100


def judge(policy: Policy, percent: float, canary: VersionFigures, default: VersionFigures,
          shadow: ShadowFigures | None, interval_over: bool, p99_floor_s: float) -> Judgement:
    """One step's verdict.

    A breach is found as soon as it is certain, without waiting for the
    interval to end: more canary errors than the step could allow even if
    every request still to come up to `min_requests` succeeded; a canary p99
    over the limit, read once both versions have 100 Triton timings (fewer is
    little more than a maximum, which one cold start decides; `default` is the
    default's figures under the same load: this step's, or the whole
    rollout's while this step has too few); agreement under the minimum over
    at least `min_requests` comparisons. Otherwise, once the interval is over,
    the step passes with `min_requests` canary requests and every gate judged
    (a canary whose every answer came from the cache has no latency to
    judge), or holds and says what is missing: no step passes unjudged."""
    allowed = policy.max_error_rate * max(canary.requests, policy.min_requests)
    if canary.errors > allowed + 1e-9:
        return Judgement("breach", "error_rate",
                         f"canary error rate {canary.error_rate:.2%} ({canary.errors} of {canary.requests}) "
                         f"over {policy.max_error_rate:.2%}")
    timed = canary.p99_s is not None and default.p99_s is not None \
        and min(canary.timings, default.timings) >= P99_SAMPLES
    if timed:
        limit = max(policy.max_p99_ratio * default.p99_s, p99_floor_s)  # type: ignore[operator]
        if canary.p99_s > limit:  # type: ignore[operator]
            return Judgement("breach", "latency",
                             f"canary p99 {canary.p99_s * 1000:.1f} ms over {limit * 1000:.1f} ms "  # type: ignore
                             f"({policy.max_p99_ratio:g} x the default's {default.p99_s * 1000:.1f} ms)")  # type: ignore
    agreement = shadow.agreement if shadow is not None else None
    if policy.min_agreement is not None and agreement is not None and shadow is not None \
            and shadow.compared >= policy.min_requests and agreement < policy.min_agreement:
        return Judgement("breach", "agreement",
                         f"shadow agreement {agreement:.2%} under {policy.min_agreement:.2%} "
                         f"over {shadow.compared} comparisons")
    if not interval_over:
        return Judgement("pending")
    if canary.requests < policy.min_requests:
        return Judgement("hold", None, f"{canary.requests} of {policy.min_requests} canary requests")
    if not timed and canary.timings > 0:
        return Judgement("hold", None, f"{canary.timings} canary and {default.timings} default Triton timings "
                         f"of the {P99_SAMPLES} each that a p99 needs")
    if policy.min_agreement is not None and percent < 100 and (shadow is None
                                                                or shadow.compared < policy.min_requests):
        compared = shadow.compared if shadow is not None else 0
        return Judgement("hold", None, f"{compared} of {policy.min_requests} shadow comparisons")
    cached = "" if timed else " (every canary answer came from the cache: no latency to judge)"
    return Judgement("pass", None, f"{canary.requests} canary requests within every gate{cached}")


class Controller:
    def __init__(self, store, figures, lease, service, settings, metrics, apply=None) -> None:
        self.store = store
        self.apply = apply  # a new state to this process's routing at once (the others: the announcement)
        self.figures = figures
        self.lease = lease
        self.service = service
        self.settings = settings
        self.metrics = metrics
        self.holding = False
        self._task: asyncio.Task | None = None
        self._last_error = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await cancel(self._task)
        if self.holding:
            try:  # hand the lease over at once rather than after its TTL
                await asyncio.wait_for(self.lease.release(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - self._last_error > 30:  # one line per 30 s while it lasts
                    log.warning("rollout controller: %s", exc)
                    self._last_error = time.monotonic()
            await asyncio.sleep(self.settings.rollout_tick_s)

    async def tick(self) -> None:
        try:
            holding = await self.lease.hold()
        except Exception:
            holding = False
            raise
        finally:
            if holding != self.holding:
                log.info("rollout controller: %s the lease (%s)", "took" if holding else "lost", self.lease.holder)
                self.holding = holding
                self.metrics.rollout_controller.set(int(holding))
        if not holding:
            return
        for state in (await self.store.all()).values():
            if state.status == "progressing":
                await self.step(state)

    async def step(self, state: Rollout, now: float | None = None) -> Rollout | None:
        """Judge one progressing rollout; the new state when it moved on."""
        now = time.time() if now is None else now
        policy = state.analysis.policy
        if policy is None or state.step is None:
            return None
        model = state.model
        ready = self.service.catalog.snapshot.ready(model)
        from router.dataplane.routing import default_version

        default = default_version(state.route(), ready)
        current = await self.figures.read(model, [state.window])
        history = await self.figures.read(model, state.windows or [state.window])
        canary = version_figures(current, state.canary_version)
        now_default = version_figures(current, default)
        baseline = now_default if now_default.timings >= P99_SAMPLES else version_figures(history, default)
        shadow = shadow_figures(current, state.shadow_version)
        interval_over = state.step_deadline is not None and now >= state.step_deadline
        if self.service.catalog.snapshot.triton_ready and state.canary_version not in ready:
            judgement = Judgement("breach", "unavailable", f"canary v{state.canary_version} is not READY in Triton")
        else:
            judgement = judge(policy, state.canary_percent, canary, baseline, shadow, interval_over,
                              self.settings.rollout_p99_floor_ms / 1000)
        verdict = {"at": round(now, 3), "step": state.step, "percent": state.canary_percent,
                   "result": judgement.result, "gate": judgement.gate, "reason": judgement.reason,
                   "canary": canary.view(), "default": now_default.view(),
                   "baseline": baseline.view(), "shadow": shadow.view() if shadow is not None else None,
                   "ends_in_s": None if state.step_deadline is None else round(max(0.0, state.step_deadline - now), 3)}
        await self.store.put_verdict(model, verdict)
        if judgement.result == "pending":
            return None
        if judgement.result == "breach":
            reason = f"{judgement.gate}: {judgement.reason}"
            updated = await self._move(model, state.revision, lambda s: s.rollback(None, reason, verdict, now))
            if updated is not None:
                self.metrics.rollout_rollbacks.labels(model, judgement.gate).inc()
                log.warning("rollout of %s v%s rolled back at %g%%: %s", model, state.canary_version,
                            state.canary_percent, reason)
            return updated
        if judgement.result == "hold":
            return await self._move(model, state.revision,
                                    lambda s: s.hold(verdict, self.settings.rollout_max_holds, now))
        updated = await self._move(model, state.revision, lambda s: s.advance(verdict, now))
        if updated is not None and updated.status == "promoted":
            self.metrics.rollout_promotions.labels(model).inc()
            log.info("rollout of %s promoted v%s to default after %d steps", model, state.canary_version,
                     len(state.steps))
        return updated

    async def _move(self, model: str, revision: int, transition) -> Rollout | None:
        updated = await self.store.transition(model, revision, transition)
        if updated is not None and self.apply is not None:
            self.apply(model, updated)
        return updated
