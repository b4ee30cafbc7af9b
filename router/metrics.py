"""Every metric, declared once, in a registry of the app's own. Labels stay
low-cardinality: model, version, route, status; never a request or user id."""

from __future__ import annotations

import threading
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STATUSES = ("idle", "progressing", "paused", "promoted", "rolled_back")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("router_requests_total", "Requests served, by outcome",
                                ["route", "model", "version", "status"], registry=r)
        self.latency = Histogram("router_request_duration_seconds", "Request latency",
                                 ["route", "model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.cache_hits = Counter("cache_hits_total", "Predictions answered from the cache",
                                  ["model", "version"], registry=r)
        self.cache_misses = Counter("cache_miss_total", "Predictions not in the cache",
                                    ["model", "version"], registry=r)
        self.cache_tier_hits = Counter("cache_tier_hits_total", "Cache hits by tier: local (in-process) or redis",
                                       ["tier"], registry=r)
        self._tier_hits = {tier: self.cache_tier_hits.labels(tier) for tier in ("local", "redis")}
        self.loaded_versions = Gauge("loaded_model_versions", "Versions Triton reports READY",
                                     ["model"], registry=r)
        self.canary = Counter("canary_assignments_total", "Requests assigned to a canary version",
                              ["model", "version"], registry=r)
        self.fallbacks = Counter("fallbacks_total", "Requests served by another version than asked",
                                 ["model", "reason"], registry=r)
        self.triton_errors = Counter("triton_errors_total", "Failed Triton calls", ["model", "code"], registry=r)
        self.triton_seconds = Histogram("triton_request_duration_seconds", "Triton inference call latency",
                                        ["model", "version"], buckets=LATENCY_BUCKETS, registry=r)
        self.redis_errors = Counter("redis_errors_total", "Failed Redis operations (served without cache)",
                                    ["op"], registry=r)
        self.coalesced = Counter("singleflight_coalesced_total", "Cache misses that joined an identical call",
                                 ["model"], registry=r)
        self.rate_limit_shared = Gauge("rate_limit_shared", "1 while rate limits are counted in the shared Redis, "
                                       "0 while each process counts its own", registry=r)
        self.rate_limit_fallbacks = Counter("rate_limit_fallbacks_total",
                                            "Rate-limit checks counted per process because Redis failed", registry=r)
        self.rejected = Counter("router_rejected_total", "Requests refused at the edge, by reason",
                                ["reason"], registry=r)
        self.shadow_requests = Counter("shadow_requests_total", "Requests also run on a shadow version",
                                       ["model", "version"], registry=r)
        self.shadow_agreements = Counter("shadow_agreements_total", "Shadow answers that agreed with the served one",
                                         ["model", "version"], registry=r)
        self.shadow_errors = Counter("shadow_errors_total", "Shadow calls that failed", ["model", "version"],
                                     registry=r)
        self.shadow_skipped = Counter("shadow_skipped_total", "Shadow calls skipped: too many in flight", registry=r)
        self.rollout_percent = Gauge("rollout_canary_percent", "The canary's share of a model's traffic",
                                     ["model"], registry=r)
        self.rollout_step = Gauge("rollout_step", "The step a rollout is at (1-based; 0 when none)",
                                  ["model"], registry=r)
        self.rollout_status = Gauge("rollout_status", "1 for a model's current rollout status",
                                    ["model", "status"], registry=r)
        self.rollout_revision = Gauge("rollout_revision", "The revision of a model's rollout state",
                                      ["model"], registry=r)
        self.rollout_controller = Gauge("rollout_controller", "1 while this process holds the controller's lease",
                                        registry=r)
        self.rollout_rollbacks = Counter("rollout_rollbacks_total", "Rollouts rolled back by the controller",
                                         ["model", "reason"], registry=r)
        self.rollout_promotions = Counter("rollout_promotions_total", "Rollouts promoted by the controller",
                                          ["model"], registry=r)
        self.batch_rows = Histogram("router_batch_rows", "Rows per Triton request the router sent for misses",
                                    ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self._request_children: dict[tuple, tuple] = {}
        self._cache_children: dict[tuple, object] = {}
        # plain tallies for /stats
        self._lock = threading.Lock()
        self._total = 0
        self._latency_sum = 0.0
        self._hits = 0
        self._lookups = 0
        self._per_version: Tally[str] = Tally()

    def observe_request(self, route: str, model: str, version: str, status: int, seconds: float) -> None:
        if model:  # /stats counts predictions, not probes and scrapes
            with self._lock:
                self._total += 1
                self._latency_sum += seconds
                if version:
                    self._per_version[f"{model}:v{version}"] += 1
        if self.enabled:
            children = self._request_children.get((route, model, version, status))
            if children is None:  # labels() validates and locks on every call: once per label set
                children = self._request_children[(route, model, version, status)] = (
                    self.requests.labels(route, model, version, str(status)), self.latency.labels(route, model, version))
            children[0].inc()
            children[1].observe(seconds)

    def observe_cache(self, model: str, version: int, hit: bool) -> None:
        with self._lock:
            self._lookups += 1
            self._hits += int(hit)
        if self.enabled:
            child = self._cache_children.get((model, version, hit))
            if child is None:
                child = self._cache_children[(model, version, hit)] = (
                    self.cache_hits if hit else self.cache_misses).labels(model, str(version))
            child.inc()

    def observe_batch(self, key: tuple, items: int, rows: int) -> None:
        if self.enabled:
            self.batch_rows.labels(key[1]).observe(rows)

    def observe_tier_hit(self, tier: str) -> None:
        if self.enabled:
            self._tier_hits[tier].inc()

    def observe_shadow(self, model: str, version: int, agree: bool | None) -> None:
        if not self.enabled:
            return
        self.shadow_requests.labels(model, str(version)).inc()
        if agree is None:
            self.shadow_errors.labels(model, str(version)).inc()
        elif agree:
            self.shadow_agreements.labels(model, str(version)).inc()

    def observe_rollout(self, state) -> None:
        """A model's rollout state, as gauges (every replica sets its own)."""
        self.rollout_percent.labels(state.model).set(state.canary_percent)
        self.rollout_step.labels(state.model).set(0 if state.step is None else state.step + 1)
        self.rollout_revision.labels(state.model).set(state.revision)
        for status in STATUSES:
            self.rollout_status.labels(state.model, status).set(int(state.status == status))

    def stats(self) -> dict:
        with self._lock:
            return {
                "total_requests": self._total,
                "cache_hit_rate": round(self._hits / self._lookups, 4) if self._lookups else 0.0,
                "avg_latency_ms": round(1000 * self._latency_sum / self._total, 3) if self._total else 0.0,
                "requests_by_version": dict(sorted(self._per_version.items())),
            }

    def render(self) -> bytes:
        return generate_latest(self.registry)
