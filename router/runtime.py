"""Every client a router process needs, opened together inside the running
loop and closed together: shared by the web app's lifespan and the worker."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from router.cache import LRUCache, RedisCache
from router.catalog import Catalog
from router.metrics import Metrics
from router.service import PredictionService
from router.settings import Settings
from router.triton import TritonGateway

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_service(settings: Settings, metrics: Metrics) -> AsyncIterator[PredictionService]:
    gateway = TritonGateway(settings.triton_protocol, settings.triton_url, settings.triton_timeout_s)
    if settings.redis_url:
        cache = RedisCache(settings.redis_url, settings.redis_timeout_s, settings.redis_backoff_max_s,
                           on_error=lambda op: metrics.redis_errors.labels(op).inc())
    else:
        cache = LRUCache(settings.cache_lru_size)

    def on_refresh(snapshot):
        for model in snapshot.states:
            metrics.loaded_versions.labels(model).set(len(snapshot.ready(model)))

    catalog = Catalog(gateway, settings.triton_refresh_s, settings.load_all_models, on_refresh)
    try:
        await catalog.start()
        log.info("connected: triton=%s (%s), cache=%s", settings.triton_url, settings.triton_protocol, cache.backend)
        yield PredictionService(settings, gateway, catalog, cache, metrics)
    finally:
        await catalog.stop()
        await cache.close()
        await gateway.close()
