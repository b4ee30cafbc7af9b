"""The dataplane's fallback branches, through the whole app over a FakeTriton."""

from __future__ import annotations

from contextlib import contextmanager

from router import keys
from router.errors import BadRequest, TritonFailed, TritonTimeout, VersionUnavailable
from tests.router.edge.test_admin import ADMIN, APP, KEYS
from tests.router.edge.test_errors import assert_error

SCRAPER_KEY, SCRAPER = keys.entry("scraper", "k-metrics", ["metrics"], None), {"X-API-Key": "k-metrics"}


def test_a_pinned_version_that_is_not_ready_falls_back_and_says_so(client, fake):
    body = client.post("/predict", json={"text": "hello", "model_version": "v9"}).json()
    assert (body["model_version"], body["routed_by"], body["requested_version"]) == (2, "fallback", 9)


def test_a_default_version_that_is_not_ready_falls_back_to_the_highest_ready(app_client, fake):
    fake.states["sentiment"][2] = "UNAVAILABLE"
    with app_client(default_model_version=2) as client:
        response = client.get("/predict", params={"text": "hello"})
        body = response.json()
        assert (body["model_version"], body["routed_by"], body["requested_version"]) == (1, "fallback", 2)
        assert response.headers["x-model-version"] == "1"
        assert client.get("/ready").status_code == 503


def test_a_version_that_goes_away_is_routed_around_at_once(client, fake):
    assert client.get("/predict", params={"text": "before"}).json()["model_version"] == 2
    fake.failures[("sentiment", 2)] = VersionUnavailable("Request for unknown model: 'sentiment' version 2")
    body = client.get("/predict", params={"text": "during"}).json()
    assert (body["model_version"], body["routed_by"], body["requested_version"]) == (1, "fallback", 2)
    calls = len(fake.calls)
    # the catalog now knows: the next request goes straight to v1 (now the highest ready, so the
    # default), without trying v2 again
    after = client.get("/predict", params={"text": "after"}).json()
    assert (after["model_version"], after["routed_by"]) == (1, "default")
    assert [c.version for c in fake.calls[calls:]] == [1]
    assert client.get("/models").json()["models"]["sentiment"]["versions"] == {"1": "READY", "2": "UNAVAILABLE"}
    assert 'fallbacks_total{model="sentiment",reason="not_ready"} 1.0' in client.get("/metrics").text


def test_a_canary_that_errors_is_served_by_stable(app_client, fake):
    fake.failures[("sentiment", 2)] = TritonFailed("Triton could not run the request")
    with app_client(default_model_version=1, canary_version=2, canary_percent=100) as client:
        response = client.get("/predict", params={"text": "canary"})
        assert response.status_code == 200
        body = response.json()
        assert (body["model_version"], body["routed_by"], body["requested_version"]) == (1, "fallback", 2)
        assert [c.version for c in fake.calls] == [2, 1]
        metrics = client.get("/metrics").text
        assert 'fallbacks_total{model="sentiment",reason="canary_error"} 1.0' in metrics
        assert 'triton_errors_total{code="triton_error",model="sentiment"} 1.0' in metrics


def test_an_error_on_a_pinned_version_is_not_hidden(client, fake):
    fake.failures[("sentiment", 1)] = TritonTimeout("Triton did not answer in time")
    response = client.get("/predict", params={"text": "pinned", "model_version": "1"})
    assert response.status_code == 504
    assert [c.version for c in fake.calls] == [1]


def test_no_ready_version_left_is_a_503(client, fake):
    for version in (1, 2):
        fake.failures[("sentiment", version)] = VersionUnavailable("version is not at ready state")
    response = client.get("/predict", params={"text": "nothing"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"


def test_lazy_loading_loads_a_model_once_on_first_use(app_client, fake):
    fake.states["digits"] = {1: "UNAVAILABLE", 2: "UNAVAILABLE"}
    with app_client(load_all_models=False) as client:
        assert fake.loads == []
        ready = client.get("/ready")
        assert ready.status_code == 200 and "digits" not in ready.json()["models"]  # not required until used
        response = client.post("/predict/batch", json={"model": "digits", "inputs": [{"image_b64": PIXEL}]})
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["model_version"] == 2
        client.post("/predict/batch", json={"model": "digits", "inputs": [{"image_b64": PIXEL}]})
        assert fake.loads == ["digits"]
        assert client.get("/ready").json()["models"]["digits"] == {"default_version": 2, "ready": True}


# a 1x1 white PNG
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEAWk1v8QAAAABJRU5ErkJggg==")


@contextmanager
def canary_everywhere(app_client):
    """A client whose every request goes to canary v2, set through /admin so
    that the rollout's figures are counted (a window is live)."""
    with app_client(api_keys=[*KEYS, SCRAPER_KEY], default_model_version=1) as client:
        changed = client.put("/admin/rollouts/sentiment", headers=ADMIN,
                             json={"canary_version": 2, "canary_percent": 100})
        assert changed.status_code == 200, changed.text
        yield client


def figures(client) -> dict:
    """The live window's canary and default figures, flushed first."""
    client.portal.call(client.app.state.control.flusher.flush)
    live = client.get("/models").json()["models"]["sentiment"]["rollout"]["figures"]
    return {role: {k: live[role][k] for k in ("version", "requests", "errors", "timings")}
            for role in ("canary", "default")}


def test_an_input_the_canary_refuses_is_served_by_stable_and_counted_against_the_canary(app_client, fake):
    """A canary may refuse what the default accepts (a changed input shape):
    the client gets the default's answer, and the refusal is the canary's error."""
    fake.failures[("sentiment", 2)] = BadRequest("Triton rejected the input: INVALID_ARGUMENT")
    with canary_everywhere(app_client) as client:
        response = client.get("/predict", params={"text": "refused"}, headers=APP)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model_version"], body["routed_by"], body["requested_version"]) == (1, "fallback", 2)
        assert [c.version for c in fake.calls] == [2, 1]
        metrics = client.get("/metrics", headers=SCRAPER).text
        assert 'fallbacks_total{model="sentiment",reason="canary_error"} 1.0' in metrics
        assert 'triton_errors_total{code="bad_request",model="sentiment"} 1.0' in metrics
        assert figures(client) == {"canary": {"version": 2, "requests": 1, "errors": 1, "timings": 0},
                                   "default": {"version": 1, "requests": 1, "errors": 0, "timings": 1}}


def test_an_input_both_versions_refuse_is_a_400_counted_against_neither(app_client, fake):
    """The input's fault is no version's: the default's 400 reaches the client,
    and neither version's figures count it."""
    for version in (1, 2):
        fake.failures[("sentiment", version)] = BadRequest("Triton rejected the input: INVALID_ARGUMENT")
    with canary_everywhere(app_client) as client:
        response = client.get("/predict", params={"text": "refused"}, headers=APP)
        assert_error(response, 400, "bad_request", "Triton rejected the input: INVALID_ARGUMENT")
        assert [c.version for c in fake.calls] == [2, 1]
        assert figures(client) == {"canary": {"version": 2, "requests": 0, "errors": 0, "timings": 0},
                                   "default": {"version": 1, "requests": 0, "errors": 0, "timings": 0}}


def test_an_input_the_default_refuses_is_not_retried(client, fake):
    """A 400 from a version not tried as a canary is final: no other version runs it."""
    fake.failures[("sentiment", 2)] = BadRequest("Triton rejected the input: INVALID_ARGUMENT")
    response = client.get("/predict", params={"text": "refused"})
    assert_error(response, 400, "bad_request", "Triton rejected the input: INVALID_ARGUMENT")
    assert [c.version for c in fake.calls] == [2]
