"""Per-key rate limits with the `limits` library: a sliding-window counter in
the cache Redis, shared by every replica, or in each process's memory when
no Redis is configured or while it is unreachable (the metric
`rate_limit_shared` says which)."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from router.breaker import Breaker
from router.edge.auth import Principal
from router.errors import RateLimited
from router.metrics import Metrics
from router.settings import Settings

log = logging.getLogger(__name__)


class RateLimiter:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.default = parse(settings.rate_limit) if settings.rate_limit else None
        self.metrics = metrics
        self._items: dict[str, RateLimitItem] = {}
        self._local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared = None
        if settings.redis_url:
            storage = RedisStorage("async+" + settings.redis_url, implementation="redispy", wrap_exceptions=True,
                                   key_prefix=f"{settings.cache_namespace}:ratelimit",
                                   socket_timeout=settings.redis_timeout_s,
                                   socket_connect_timeout=settings.redis_timeout_s)
            self._shared = SlidingWindowCounterRateLimiter(storage)
        self._breaker = Breaker("redis rate limiter", "limiting per process", settings.redis_backoff_max_s, log)
        metrics.rate_limit_shared.set(1 if self._shared is not None else 0)

    async def close(self) -> None:
        if self._shared is not None:
            client = getattr(getattr(self._shared.storage, "bridge", None), "storage", None)
            if client is not None:
                await client.aclose()

    def _item(self, principal: Principal) -> RateLimitItem | None:
        if principal.rate is None:
            return self.default
        item = self._items.get(principal.rate)
        if item is None:
            item = self._items[principal.rate] = parse(principal.rate)
        return item

    def limits(self, principal: Principal) -> bool:
        """Whether a limit applies to this principal's requests."""
        return self._item(principal) is not None

    async def hit(self, principal: Principal, client: str) -> None:
        """Count one request; RateLimited (429) when over the limit."""
        item = self._item(principal)
        if item is None:
            return
        who = f"key:{principal.name}" if principal.name is not None else f"addr:{client}"
        limiter = self._limiter()
        try:
            allowed = await limiter.hit(item, who)
        except Exception as exc:  # limits' StorageError and redis-py's errors
            self._fell_back(exc)
            limiter = self._local
            allowed = await limiter.hit(item, who)
        else:
            if limiter is self._shared and self._breaker.tripped:
                self._breaker.succeeded()
                self.metrics.rate_limit_shared.set(1)
        if not allowed:
            raise await self._refusal(limiter, item, who)

    def _limiter(self):
        if self._shared is not None and self._breaker.available:
            return self._shared
        return self._local

    def _fell_back(self, exc: Exception) -> None:
        self._breaker.failed("hit", exc)
        self.metrics.rate_limit_shared.set(0)
        self.metrics.rate_limit_fallbacks.inc()

    async def _refusal(self, limiter, item: RateLimitItem, who: str) -> RateLimited:
        try:
            reset_time, _ = await limiter.get_window_stats(item, who)
            wait = max(1, math.ceil(reset_time - time.time()))
        except Exception:
            wait = item.get_expiry()
        headers = {"Retry-After": str(wait), "RateLimit-Limit": str(item.amount), "RateLimit-Remaining": "0",
                   "RateLimit-Reset": str(wait), "RateLimit-Policy": f"{item.amount};w={item.get_expiry()}"}
        return RateLimited(f"rate limit of {item.amount} per {item.get_expiry()} s exceeded; retry after {wait} s",
                           headers)
