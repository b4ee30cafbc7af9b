"""Which version serves a request, and what is counted around the call: each
model's split (from settings, then from its rollout state), the decision,
the fallback after a failure, the rollout's figures and the shadow call
after the answer. Shared by predictions and raw-tensor inference; knows
nothing of HTTP, the cache or Triton's protocol."""

from __future__ import annotations

import logging
from typing import Awaitable, Callable, TypeVar

from router.control.figures import Recorder
from router.control.state import Rollout
from router.dataplane.catalog import Catalog
from router.dataplane.routing import Decision, fallback, in_canary, resolve
from router.dataplane.shadow import Shadows
from router.dataplane.types import Options
from router.errors import BadRequest, ModelUnavailable, RouterError, VersionUnavailable
from router.metrics import Metrics
from router.settings import ModelRoute, Settings

log = logging.getLogger(__name__)

T = TypeVar("T")


class Versions:
    def __init__(self, settings: Settings, catalog: Catalog, metrics: Metrics) -> None:
        self.settings = settings
        self.catalog = catalog
        self.metrics = metrics
        self._routes: dict[str, ModelRoute] = {}
        self._rollouts: dict[str, Rollout] = {}  # the latest stored state of each model, for the views
        self.figures = Recorder()
        self.shadows = Shadows(settings.shadow_max_in_flight, metrics.shadow_skipped.inc)

    async def close(self) -> None:
        await self.shadows.close()

    # --- each model's split ----------------------------------------------------

    def set_route(self, model: str, route: ModelRoute) -> None:
        """A rollout state changed: this model's split from now on, and the
        window its figures are counted in."""
        self._routes[model] = route
        self.figures.window(model, route.window)

    def set_rollout(self, model: str, state: Rollout) -> None:
        """The model's latest rollout state, as the views show it."""
        self._rollouts[model] = state

    def rollout(self, model: str) -> Rollout:
        """The model's latest rollout state; before any, its settings (revision 0)."""
        state = self._rollouts.get(model)
        return state if state is not None else Rollout.seed(model, self.settings.route_for(model))

    def route(self, model: str) -> ModelRoute:
        """The model's split, computed once from settings."""
        route = self._routes.get(model)
        if route is None:
            route = self._routes[model] = self.settings.route_for(model)
        return route

    # --- one request -----------------------------------------------------------

    def decide(self, opts: Options) -> Decision:
        decision = self.resolve(opts)
        if decision is None:
            raise ModelUnavailable(f"no version of {opts.model!r} is ready")
        self.count_decision(opts.model, decision)
        return decision

    def resolve(self, opts: Options) -> Decision | None:
        """The decision, uncounted; None when no version can serve."""
        return resolve(self.route(opts.model), self.catalog.snapshot.ready(opts.model), opts.routing_key,
                       opts.requested_version)

    def count_decision(self, model: str, decision: Decision) -> None:
        if decision.routed_by == "canary":
            self.metrics.canary.labels(model, str(decision.version)).inc()
        elif decision.routed_by == "fallback":
            self.metrics.fallbacks.labels(model, "not_ready").inc()

    async def routed(self, opts: Options, serve: Callable[[int], Awaitable[T]]) -> tuple[Decision, T]:
        """`serve(version)` with the version routing decides, falling back as
        `after_failure` says. Each try of a routed request counts in the
        rollout's figures (a request pinned to a version does not: it would
        let any client decide a step): a success, or a failure that is the
        version's. A canary that refuses the input (400) falls back too, and
        counts as the canary's failure only when the default then serves it."""
        decision = self.decide(opts)
        counted = opts.requested_version is None
        refused: int | None = None
        while True:
            try:
                result = await serve(decision.version)
            except RouterError as exc:
                if isinstance(exc, BadRequest):
                    if decision.routed_by == "canary" and counted:
                        refused = decision.version
                elif counted:
                    self.figures.attempt(opts.model, decision.version, False)
                decision = self.after_failure(opts, decision, exc)
                continue
            if counted:
                self.figures.attempt(opts.model, decision.version, True)
                if refused is not None:
                    self.figures.attempt(opts.model, refused, False)
            return decision, result

    def after_failure(self, opts: Options, decision: Decision, exc: RouterError) -> Decision:
        """The next version to try, or re-raise. A version Triton calls not
        ready is routed around; a canary that errors in any way too."""
        canary_failed = decision.routed_by == "canary"
        if not canary_failed and not isinstance(exc, VersionUnavailable):
            raise exc  # an input refused or a Triton error is the same on any version; a canary may differ
        if isinstance(exc, VersionUnavailable):
            self.catalog.mark_unready(opts.model, decision.version)
        route = self.route(opts.model)
        ready = self.catalog.snapshot.ready(opts.model) - {decision.version}
        failed = decision.requested_version or decision.version
        nxt = fallback(route, ready, failed)
        if nxt is None:
            raise ModelUnavailable(f"no version of {opts.model!r} is ready") from exc
        self.metrics.fallbacks.labels(opts.model, "canary_error" if canary_failed else "not_ready").inc()
        log.warning("%s v%d failed (%s); falling back to v%d", opts.model, decision.version, exc.code, nxt.version)
        return nxt

    # --- shadow traffic --------------------------------------------------------

    def shadow(self, model: str, key: str, served: int, work: Callable[[int], Awaitable[None]]) -> None:
        """Runs `work(shadow_version)` after this answer when the request's key
        falls in the shadow's share and another version served it."""
        route = self.route(model)
        version = route.shadow_version
        if version is None or route.shadow_percent <= 0 or version == served:
            return
        if in_canary(key, route.shadow_percent) and version in self.catalog.snapshot.ready(model):
            self.shadows.run(lambda: work(version))

    def shadow_result(self, model: str, version: int, comparison) -> None:
        """One shadow answer compared (or None: it failed), counted everywhere."""
        if comparison is None:
            self.figures.shadow(model, version, None)
        else:
            self.figures.shadow(model, version, comparison.agree, comparison.max_abs_diff, comparison.cosine)
        self.metrics.observe_shadow(model, version, None if comparison is None else comparison.agree)
