"""Version resolution and sticky, monotone canary assignment. Pure logic."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from router.settings import ModelRoute

BUCKETS = 10_000


def bucket(key: str) -> int:
    """A stable bucket in [0, 10000) for a user or request key."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_canary(key: str, percent: float) -> bool:
    """Buckets below percent x 100 go to the canary: raising the percent only
    adds buckets, so a user once on the canary stays there."""
    return bucket(key) < round(percent * 100)


@dataclass(frozen=True)
class Decision:
    version: int
    routed_by: str  # pinned | default | canary | fallback
    requested_version: int | None = None  # set when a requested/canary version was not honoured


def default_version(route: ModelRoute, ready: frozenset[int]) -> int | None:
    """The configured default, or the highest ready version when none is set."""
    if route.default_version is not None:
        return route.default_version
    return max(ready) if ready else None


def resolve(route: ModelRoute, ready: frozenset[int], key: str, requested: int | None = None) -> Decision | None:
    """Which version serves this request. None: no version can serve.

    An explicitly requested version wins when ready. Otherwise the canary
    takes its share of keys when ready. Anything not honoured falls back to
    the default, or, when the default itself is not ready, to the highest
    ready version; the decision then says `fallback` and what was asked for.
    """
    default = default_version(route, ready)
    wanted, how = default, "default"
    if requested is not None:
        wanted, how = requested, "pinned"
    elif route.canary_version is not None and route.canary_percent > 0 and in_canary(key, route.canary_percent):
        wanted, how = route.canary_version, "canary"
    if wanted is not None and wanted in ready:
        return Decision(wanted, how)
    return fallback(route, ready, wanted)


def fallback(route: ModelRoute, ready: frozenset[int], failed: int | None) -> Decision | None:
    """The version to use when `failed` cannot serve."""
    default = default_version(route, ready)
    if default is not None and default in ready and default != failed:
        return Decision(default, "fallback", failed)
    others = sorted(ready - {failed}) if failed is not None else sorted(ready)
    if others:
        return Decision(others[-1], "fallback", failed)
    return None
