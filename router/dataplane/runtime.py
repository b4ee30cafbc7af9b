"""Every client the dataplane needs, opened together inside the running loop
and closed together: shared by the web app's lifespan and the worker."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from router.dataplane.cache import LRUCache
from router.dataplane.shared_cache import RedisCache
from router.dataplane.tiered_cache import TieredCache
from router.dataplane.catalog import Catalog
from router.dataplane.gateway import Gateway
from router.dataplane.service import PredictionService
from router.metrics import Metrics
from router.settings import Settings

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_service(settings: Settings, metrics: Metrics,
                       gateway: Gateway | None = None) -> AsyncIterator[PredictionService]:
    """The prediction service over `gateway`, or over a Triton gateway made
    from settings (and closed here) when none is given."""
    owned = gateway is None
    if gateway is None:
        from router.dataplane.triton import TritonGateway

        gateway = TritonGateway(settings.triton_protocol, settings.triton_url, settings.triton_timeout_s,
                                settings.triton_admin_headers)
    local = LRUCache(settings.cache_lru_size, int(settings.cache_lru_max_mb * (1 << 20)))
    if settings.redis_url:
        remote = RedisCache(settings.redis_url, settings.redis_timeout_s, settings.redis_backoff_max_s,
                            on_error=lambda op: metrics.redis_errors.labels(op).inc(),
                            in_flight=settings.redis_in_flight)
        cache = TieredCache(local, remote, on_hit=metrics.observe_tier_hit)
    else:
        cache = local

    def on_refresh(snapshot):
        for model in snapshot.states:
            metrics.loaded_versions.labels(model).set(len(snapshot.ready(model)))

    catalog = Catalog(gateway, settings.triton_refresh_s, settings.load_all_models, on_refresh,
                      settings.triton_ready_timeout_s)
    service = None
    try:
        await catalog.start()
        triton = f"{settings.triton_url} ({settings.triton_protocol})" if owned else type(gateway).__name__
        log.info("connected: triton=%s, cache=%s", triton, cache.backend)
        service = PredictionService(settings, gateway, catalog, cache, metrics)
        yield service
    finally:
        if service is not None:
            await service.close()  # its shadow calls and image-decoding threads
        await catalog.stop()
        await cache.close()
        if owned:
            await gateway.close()
