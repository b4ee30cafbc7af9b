"""Each model's live rollout in GET /models: the seeded state, changes made
through /admin, the current window's figures, read once a second however often
/models is asked, and a figures store that fails or hangs. Over a FakeTriton,
without Redis (the in-process stores)."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.control.figures import MemoryFigures
from router.control.state import Rollout
from router.dataplane.views import LiveFigures
from router.errors import TritonFailed
from tests.router.edge.test_admin import ADMIN, APP, KEYS
from tests.router.edge.test_v2 import result, sentiment

ROUTES = {"digits": {"default_version": 1, "canary_version": 2, "canary_percent": 10}}
EMPTY = {"requests": 0, "errors": 0, "error_rate": 0.0, "timings": 0, "p99_ms": None}


def rollout(client, model: str) -> dict:
    response = client.get("/models")
    assert response.status_code == 200, response.text
    return response.json()["models"][model]["rollout"]


@pytest.fixture
def admin(app_client):
    with app_client(api_keys=KEYS, default_model_version=1, model_routes=ROUTES) as client:
        yield client


class CountedReads:
    """The figures store's reads, counted: a tiny wrapper put in its place."""

    def __init__(self, monkeypatch, store, fail: BaseException | None = None) -> None:
        self.models: list[str] = []
        self.real = store.read
        self.fail = fail
        monkeypatch.setattr(store, "read", self.read)

    async def read(self, model: str, windows: list[int]) -> dict[str, float]:
        self.models.append(model)
        if self.fail is not None:
            raise self.fail
        return await self.real(model, windows)


def test_models_show_the_seeded_settings_without_a_stored_state(admin):
    digits = rollout(admin, "digits")
    figures = digits.pop("figures")
    assert digits == {"status": "idle", "revision": 0, "default_version": 1, "canary_version": 2,
                      "canary_percent": 10.0, "step": None, "steps": [], "shadow_version": None,
                      "shadow_percent": 0.0, "reason": None}
    assert figures["canary"] == {"version": 2, **EMPTY} and figures["default"] == {"version": 1, **EMPTY}
    assert figures["shadow"] is None
    assert rollout(admin, "sentiment") == {
        "status": "idle", "revision": 0, "default_version": 1, "canary_version": None, "canary_percent": 0.0,
        "step": None, "steps": [], "shadow_version": None, "shadow_percent": 0.0, "reason": None,
        "figures": None}  # nothing live: no figures


def test_models_show_each_change_at_once(admin):
    changed = admin.put("/admin/rollouts/sentiment", headers=ADMIN, json={"canary_version": 2, "canary_percent": 25})
    assert changed.status_code == 200, changed.text
    after = rollout(admin, "sentiment")
    assert (after["status"], after["revision"], after["canary_version"], after["canary_percent"]) == \
        ("idle", 1, 2, 25.0)
    assert after["figures"]["window"] == 1 and after["figures"]["canary"] == {"version": 2, **EMPTY}
    back = admin.put("/admin/rollouts/sentiment", headers=ADMIN, json={"canary_percent": 0})
    assert back.status_code == 200, back.text
    assert (rollout(admin, "sentiment")["canary_percent"], rollout(admin, "sentiment")["figures"]) == (0.0, None)
    # the existing fields follow the same state
    assert admin.get("/models").json()["models"]["sentiment"]["canary_percent"] == 0.0


def test_models_show_an_analysed_rollout_its_step_and_why_it_paused(admin):
    started = admin.post("/admin/rollouts/sentiment/start", headers=ADMIN,
                         json={"canary_version": 2, "steps": [5, 50, 100], "interval_s": 3600})
    assert started.status_code == 200, started.text
    shown = rollout(admin, "sentiment")
    assert (shown["status"], shown["canary_percent"], shown["step"], shown["steps"], shown["reason"]) == \
        ("progressing", 5.0, 1, [5.0, 50.0, 100.0], None)
    paused = admin.post("/admin/rollouts/sentiment/pause", headers=ADMIN, json={"reason": "looking into p99"})
    assert paused.status_code == 200, paused.text
    shown = rollout(admin, "sentiment")
    assert (shown["status"], shown["step"], shown["reason"]) == ("paused", 1, "looking into p99")
    rolled = admin.post("/admin/rollouts/sentiment/rollback", headers=ADMIN, json={"reason": "too slow"})
    assert rolled.status_code == 200, rolled.text
    shown = rollout(admin, "sentiment")
    assert (shown["status"], shown["canary_percent"], shown["step"], shown["reason"], shown["figures"]) == \
        ("rolled_back", 0.0, None, "too slow", None)


def test_models_show_the_figures_of_the_live_window_after_predictions(admin, fake):
    changed = admin.put("/admin/rollouts/sentiment", headers=ADMIN, json={
        "canary_version": 2, "canary_percent": 100, "shadow_version": 1, "shadow_percent": 100})
    assert changed.status_code == 200, changed.text
    for n in range(3):  # on the canary, and each also on the shadow
        assert admin.get("/predict", params={"text": f"figures {n}"}, headers=APP).json()["model_version"] == 2
    fake.failures[("sentiment", 2)] = TritonFailed("Triton could not run the request")
    body = admin.get("/predict", params={"text": "figures failed"}, headers=APP).json()  # the canary fails
    assert (body["model_version"], body["routed_by"]) == (1, "fallback")
    service, control = admin.app.state.service, admin.app.state.control
    deadline = time.monotonic() + 5
    while service.versions.shadows.in_flight:
        assert time.monotonic() < deadline, "the shadow calls did not finish"
        time.sleep(0.01)
    admin.portal.call(control.flusher.flush)
    figures = rollout(admin, "sentiment")["figures"]
    assert figures["window"] == 1
    canary = figures["canary"]
    assert (canary["version"], canary["requests"], canary["errors"], canary["error_rate"]) == (2, 4, 1, 0.25)
    assert canary["p99_ms"] > 0
    assert canary["timings"] == 3, "a Triton call that failed gives no latency"
    default = figures["default"]
    assert (default["version"], default["requests"], default["errors"], default["error_rate"]) == (1, 1, 0, 0.0)
    assert default["timings"] == 4, "its Triton calls: the fallback's and the 3 shadow calls"
    shadow = figures["shadow"]
    assert (shadow["version"], shadow["requests"], shadow["errors"], shadow["compared"]) == (1, 3, 0, 3)
    assert 0.0 <= shadow["agreement"] <= 1.0 and shadow["agreement"] == shadow["agreements"] / 3


def live_figures(client, model: str = "sentiment") -> dict:
    """The live window's canary and default figures, once this process's tallies are flushed."""
    client.portal.call(client.app.state.control.flusher.flush)
    figures = rollout(client, model)["figures"]
    return {role: {k: figures[role][k] for k in ("version", "requests", "errors", "timings")}
            for role in ("canary", "default")}


def test_a_cached_answer_is_a_request_without_a_timing(admin, fake):
    changed = admin.put("/admin/rollouts/sentiment", headers=ADMIN, json={"canary_version": 2, "canary_percent": 100})
    assert changed.status_code == 200, changed.text
    for _ in range(3):
        assert admin.get("/predict", params={"text": "same"}, headers=APP).json()["model_version"] == 2
    assert [c.version for c in fake.calls] == [2]
    assert result(sentiment(admin, headers=APP)).as_numpy("probabilities") is not None  # /v2, routed: counted
    assert result(sentiment(admin, headers=APP)).as_numpy("probabilities") is not None  # the same: cached
    assert live_figures(admin) == {"canary": {"version": 2, "requests": 5, "errors": 0, "timings": 2},
                                   "default": {"version": 1, "requests": 0, "errors": 0, "timings": 0}}


def test_requests_pinned_to_a_version_are_timed_but_not_counted(admin, fake):
    """A client that names the version decides which one serves it: were its
    requests counted, any client could pass or fail a step."""
    changed = admin.put("/admin/rollouts/sentiment", headers=ADMIN, json={"canary_version": 2, "canary_percent": 100})
    assert changed.status_code == 200, changed.text
    for version in (1, 2):
        body = admin.get("/predict", params={"text": f"pinned {version}", "model_version": str(version)},
                         headers=APP).json()
        assert (body["model_version"], body["routed_by"]) == (version, "pinned")
    assert result(sentiment(admin, version="1", headers=APP)).as_numpy("probabilities") is not None
    fake.failures[("sentiment", 2)] = TritonFailed("Triton could not run the request")
    assert sentiment(admin, text="fails", version="2", headers=APP).status_code == 502
    assert admin.get("/predict", params={"text": "fails", "model_version": "2"}, headers=APP).status_code == 502
    assert live_figures(admin) == {"canary": {"version": 2, "requests": 0, "errors": 0, "timings": 1},
                                   "default": {"version": 1, "requests": 0, "errors": 0, "timings": 2}}


def test_figures_are_read_once_a_second_however_often_models_is_asked(admin, monkeypatch):
    reads = CountedReads(monkeypatch, admin.app.state.control.figures)
    started = time.monotonic()
    for _ in range(5):
        assert rollout(admin, "digits")["figures"]["canary"]["version"] == 2
    assert time.monotonic() - started < 1.0, "too slow to test the cache"
    assert reads.models == ["digits"]  # sentiment has nothing live: never read


def test_models_stay_200_without_figures_when_the_store_fails(admin, monkeypatch):
    reads = CountedReads(monkeypatch, admin.app.state.control.figures, ConnectionError("Redis is down"))
    response = admin.get("/models")
    assert response.status_code == 200, response.text
    digits = response.json()["models"]["digits"]
    assert digits["rollout"]["figures"] is None and digits["rollout"]["canary_percent"] == 10.0
    assert digits["canary_version"] == 2 and digits["versions"] == {"1": "READY", "2": "READY"}
    assert admin.get("/models").status_code == 200 and reads.models == ["digits"]  # the failure is cached too


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def live_state(window: int = 1) -> Rollout:
    return Rollout(model="digits", revision=window, default_version=1, canary_version=2, canary_percent=10,
                   window=window)


def test_live_figures_share_one_read_per_ttl_and_read_again_after_it_or_for_another_window(monkeypatch):
    async def main():
        store, clock = MemoryFigures(), Clock()
        reads = CountedReads(monkeypatch, store)
        live = LiveFigures(store, ttl_s=1.0, clock=clock)
        state = live_state()
        together = await asyncio.gather(*(live.of(state, 1) for _ in range(10)))  # concurrent: one read
        assert reads.models == ["digits"] and all(f == together[0] for f in together)
        clock.now += 0.9
        await live.of(state, 1)
        assert len(reads.models) == 1
        clock.now += 0.2
        await live.of(state, 1)
        assert len(reads.models) == 2
        assert (await live.of(live_state(window=2), 1))["window"] == 2  # a new window: read at once
        assert len(reads.models) == 3
        assert await live.of(Rollout(model="digits", default_version=1), 1) is None  # nothing live
        assert len(reads.models) == 3

    asyncio.run(main())


def test_live_figures_of_a_store_that_hangs_are_none_after_the_timeout():
    class Hanging:
        async def read(self, model, windows):
            await asyncio.sleep(30)

    async def main():
        live = LiveFigures(Hanging(), timeout_s=0.05)
        started = time.monotonic()
        assert await live.of(live_state(), 1) is None
        assert time.monotonic() - started < 1.0

    asyncio.run(main())
