from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import LATENCY_BUCKETS, Metrics

# on both sides of and exactly on bucket bounds, and past the last
SECONDS = [0.0, 0.0004, 0.001, 0.0011, 0.0025, 0.03, 0.25, 9.99, 10.0, 10.5, 120.0]


def samples(text: bytes) -> dict:
    """(name, labels) -> value, without the `_created` samples."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            if not s.name.endswith("_created"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_tallies_scrape_as_prometheus_clients_own_metrics_would():
    mine = Metrics()
    registry = CollectorRegistry()
    requests = Counter("router_requests_total", "Requests served, by outcome", ["route", "model", "version", "status"],
                       registry=registry)
    latency = Histogram("router_request_duration_seconds", "Request latency", ["route", "model", "version"],
                        buckets=LATENCY_BUCKETS, registry=registry)
    hits = Counter("cache_hits_total", "Predictions answered from the cache", ["model", "version"], registry=registry)
    misses = Counter("cache_miss_total", "Predictions not in the cache", ["model", "version"], registry=registry)
    tiers = Counter("cache_tier_hits_total", "Cache hits by tier: local (in-process) or redis", ["tier"],
                    registry=registry)
    for tier in ("local", "redis"):
        tiers.labels(tier)
    for i, seconds in enumerate(SECONDS):
        route, status = ("/predict", 200) if i % 3 else ("/v2/models/{model}/infer", 422)
        mine.observe_request(route, "sentiment", "2", status, seconds)
        requests.labels(route, "sentiment", "2", str(status)).inc()
        latency.labels(route, "sentiment", "2").observe(seconds)
        mine.observe_cache("sentiment", 2, i % 2 == 0)
        (hits if i % 2 == 0 else misses).labels("sentiment", "2").inc()
        mine.observe_tier_hit("local" if i % 4 else "redis")
        tiers.labels("local" if i % 4 else "redis").inc()
    expected = samples(generate_latest(registry))
    scraped = samples(mine.render())
    assert {k: v for k, v in scraped.items() if k in expected} == expected
    assert {name for name, _ in expected} <= {name for name, _ in scraped}
    assert mine.stats()["total_requests"] == len(SECONDS) and mine.stats()["cache_hit_rate"] == round(6 / 11, 4)


def test_metrics_off_still_keep_the_stats_and_scrape_no_request_samples():
    mine = Metrics(enabled=False)
    mine.observe_request("/predict", "sentiment", "2", 200, 0.002)
    mine.observe_cache("sentiment", 2, True)
    mine.observe_tier_hit("local")
    assert mine.stats()["total_requests"] == 1 and mine.stats()["cache_hit_rate"] == 1.0
    scraped = samples(mine.render())
    assert not [k for k in scraped if k[0].startswith(("router_request", "cache_hits", "cache_miss"))]
    assert scraped[("cache_tier_hits_total", (("tier", "local"),))] == 0.0
