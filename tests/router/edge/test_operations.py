"""Readiness, the models view, health, metrics, stats, the page, and the
access log line filled from the request's record."""

from __future__ import annotations

import logging


def test_ready_and_models_views(app_client, fake):
    routes = {"digits": {"default_version": 1, "canary_version": 2, "canary_percent": 10}}
    with app_client(model_routes=routes) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "triton": True, "models": {
            "digits": {"default_version": 1, "ready": True}, "sentiment": {"default_version": 2, "ready": True}}}
        models = client.get("/models").json()
        assert models["default_model"] == "sentiment" and models["triton"] is True
        rollout = models["models"]["digits"].pop("rollout")  # see test_models_rollout.py
        assert (rollout["status"], rollout["canary_version"], rollout["canary_percent"]) == ("idle", 2, 10.0)
        assert models["models"]["digits"] == {
            "versions": {"1": "READY", "2": "READY"}, "default_version": 1, "canary_version": 2,
            "canary_percent": 10.0, "labels": [str(d) for d in range(10)], "input_kind": "image_gray",
            "input_shape": [8, 8], "inputs": [{"name": "image", "datatype": "UINT8", "shape": [8, 8]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [10]}]}
        assert models["models"]["sentiment"]["input_shape"] == [256]


def test_health_ping_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "model_loaded": True, "triton": "ready",
                                            "redis": "disabled", "auth": "off"}
    assert client.get("/ping").json() == {"status": "ok"}
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/static/app.js").status_code == 200


def test_metrics_and_stats_count_predictions_not_probes(client):
    client.get("/predict", params={"text": "count me"})
    client.get("/predict", params={"text": "count me"})
    client.get("/predict", params={"text": "count me", "model_version": "1"})
    client.get("/ready")
    stats = client.get("/stats").json()
    assert stats["total_requests"] == 3
    assert stats["requests_by_version"] == {"sentiment:v1": 1, "sentiment:v2": 2}
    assert stats["cache_hit_rate"] == round(1 / 3, 4)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    assert 'router_requests_total{model="sentiment",route="/predict",status="200",version="2"} 2.0' in text
    assert 'router_requests_total{model="",route="/ready",status="200",version=""} 1.0' in text
    assert 'cache_hits_total{model="sentiment",version="2"} 1.0' in text


def test_the_access_log_line_carries_the_record(app_client, caplog):
    with app_client(request_logging=True) as client, caplog.at_level(logging.INFO, logger="router.access"):
        client.get("/predict", params={"text": "log me"}, headers={"X-Request-ID": "log-1"})
        client.get("/predict", params={"text": "log me"}, headers={"X-Request-ID": "log-2"})
        client.get("/nowhere", headers={"X-Request-ID": "log-3"})
    lines = [r for r in caplog.records if r.name == "router.access"]
    assert [(r.status, r.model, r.version, r.routed_by, r.cache) for r in lines] == [
        (200, "sentiment", 2, "default", "MISS"), (200, "sentiment", 2, "default", "HIT"),
        (404, None, None, None, None)]
    assert [r.path for r in lines] == ["/predict", "/predict", "/nowhere"]


def test_the_garbage_collector_is_tuned_at_start_up(app_client):
    import gc

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, *saved[1:])
        with app_client(gc_gen0_threshold=12_345):
            assert gc.get_threshold() == (12_345, *saved[1:])
        gc.set_threshold(700, *saved[1:])
        with app_client(gc_gen0_threshold=0):
            assert gc.get_threshold() == (700, *saved[1:])  # left as it was
    finally:
        gc.set_threshold(*saved)
