"""Every metric, declared once, in a registry of the app's own. Labels stay
low-cardinality: model, version, route, status; never a request or user id."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

STATUSES = ("idle", "progressing", "paused", "promoted", "rolled_back")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LE = [floatToGoString(b) for b in LATENCY_BUCKETS] + ["+Inf"]


class RequestTallies(Collector):
    """The metrics every request moves (requests and their latency, cache
    lookups, hits per tier), counted as plain numbers in dicts by the event
    loop's thread and turned into metric families only when scraped: an
    update is a dict lookup and an addition, without the lock and the label
    handling of prometheus_client's own metrics.
    Same names, labels and buckets as those would have; no `_created`."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, int], int] = {}
        self.latency: dict[tuple[str, str, str], list] = {}  # a count per bucket (+Inf last), then the sum
        self.cache: dict[tuple[str, str, bool], int] = {}
        self.tiers: dict[str, int] = {"local": 0, "redis": 0}

    def request(self, route: str, model: str, version: str, status: int, seconds: float) -> None:
        key = (route, model, version, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        slots = self.latency.get(key[:3])
        if slots is None:
            slots = self.latency[key[:3]] = [0] * len(_LE) + [0.0]
        slots[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        slots[-1] += seconds

    def lookup(self, model: str, version: str, hit: bool) -> None:
        key = (model, version, hit)
        self.cache[key] = self.cache.get(key, 0) + 1

    def describe(self):
        return self._families()

    def collect(self):
        return self._families(fill=True)

    def _families(self, fill: bool = False) -> list:
        requests = CounterMetricFamily("router_requests", "Requests served, by outcome",
                                       labels=["route", "model", "version", "status"])
        latency = HistogramMetricFamily("router_request_duration_seconds", "Request latency",
                                        labels=["route", "model", "version"])
        hits = CounterMetricFamily("cache_hits", "Predictions answered from the cache", labels=["model", "version"])
        misses = CounterMetricFamily("cache_miss", "Predictions not in the cache", labels=["model", "version"])
        tiers = CounterMetricFamily("cache_tier_hits", "Cache hits by tier: local (in-process) or redis",
                                    labels=["tier"])
        if fill:  # copies first (each made whole, under the GIL): the loop goes on counting meanwhile
            for (route, model, version, status), n in list(self.requests.items()):
                requests.add_metric([route, model, version, str(status)], n)
            for labels, slots in list(self.latency.items()):
                slots, total, cumulative = list(slots), 0, []
                for le, n in zip(_LE, slots):
                    total += n
                    cumulative.append((le, total))
                latency.add_metric(list(labels), cumulative, slots[-1])
            for (model, version, hit), n in list(self.cache.items()):
                (hits if hit else misses).add_metric([model, version], n)
            for tier, n in list(self.tiers.items()):
                tiers.add_metric([tier], n)
        return [requests, latency, hits, misses, tiers]


class Metrics:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry()
        r = self.registry
        self.tallies = RequestTallies()
        r.register(self.tallies)
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
        # plain tallies for /stats (kept with metrics off too); like the tallies above, counted by the
        # event loop's thread alone
        self._total = 0
        self._latency_sum = 0.0
        self._hits = 0
        self._lookups = 0
        self._per_version: Tally[str] = Tally()

    def observe_request(self, route: str, model: str, version: str, status: int, seconds: float) -> None:
        if model:  # /stats counts predictions, not probes and scrapes
            self._total += 1
            self._latency_sum += seconds
            if version:
                self._per_version[f"{model}:v{version}"] += 1
        if self.enabled:
            self.tallies.request(route, model, version, status, seconds)

    def observe_cache(self, model: str, version: int, hit: bool) -> None:
        self._lookups += 1
        self._hits += hit
        if self.enabled:
            self.tallies.lookup(model, str(version), hit)

    def observe_batch(self, key: tuple, items: int, rows: int) -> None:
        if self.enabled:
            self.batch_rows.labels(key[1]).observe(rows)

    def observe_tier_hit(self, tier: str) -> None:
        if self.enabled:
            self.tallies.tiers[tier] += 1

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
        return {
            "total_requests": self._total,
            "cache_hit_rate": round(self._hits / self._lookups, 4) if self._lookups else 0.0,
            "avg_latency_ms": round(1000 * self._latency_sum / self._total, 3) if self._total else 0.0,
            "requests_by_version": dict(sorted(self._per_version.items())),
        }

    def render(self) -> bytes:
        return generate_latest(self.registry)
