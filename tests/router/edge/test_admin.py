"""/admin/rollouts over a FakeTriton, without Redis (the state in process)."""

from __future__ import annotations

import time

import pytest

from router import keys
from tests.router.edge.test_errors import assert_error

KEYS = [keys.entry("ops", "k-ops", ["admin"], None), keys.entry("app", "k-app", ["predict"], None)]
ADMIN, APP = {"X-API-Key": "k-ops"}, {"X-API-Key": "k-app"}


@pytest.fixture
def admin(app_client):
    with app_client(api_keys=KEYS, default_model_version=1) as client:
        yield client


def test_only_admin_keys(admin):
    assert_error(admin.get("/admin/rollouts"), 401, "unauthorized", "this route needs an API key with the 'admin' scope")
    assert_error(admin.get("/admin/rollouts", headers=APP), 403, "forbidden",
                 "the API key 'app' does not have the 'admin' scope")


def test_the_state_is_seeded_from_settings_then_changed_at_runtime(admin, fake):
    state = admin.get("/admin/rollouts/sentiment", headers=ADMIN).json()
    assert (state["revision"], state["default_version"], state["canary_version"], state["canary_percent"]) == \
        (0, 1, None, 0.0)
    assert admin.get("/predict", params={"text": "before"}, headers=APP).json()["model_version"] == 1
    changed = admin.put("/admin/rollouts/sentiment", headers=ADMIN,
                        json={"canary_version": 2, "canary_percent": 100, "reason": "try v2"})
    assert changed.status_code == 200, changed.text
    state = changed.json()
    assert (state["revision"], state["canary_version"], state["canary_percent"]) == (1, 2, 100.0)
    assert state["history"][-1]["by"] == "ops" and state["history"][-1]["reason"] == "try v2"
    assert state["history"][-1]["set"] == {"canary_version": 2, "canary_percent": 100.0}
    after = admin.get("/predict", params={"text": "after"}, headers=APP).json()
    assert (after["model_version"], after["routed_by"]) == (2, "canary")
    assert admin.get("/models").json()["models"]["sentiment"]["canary_percent"] == 100.0
    back = admin.put("/admin/rollouts/sentiment", headers=ADMIN, json={"canary_percent": 0}).json()
    assert back["revision"] == 2 and back["canary_version"] == 2 and back["canary_percent"] == 0.0
    assert admin.get("/predict", params={"text": "again"}, headers=APP).json()["model_version"] == 1
    assert set(admin.get("/admin/rollouts", headers=ADMIN).json()) == {"digits", "sentiment"}


@pytest.mark.parametrize("body,status,code,message", [
    ({"canary_version": 7, "canary_percent": 10}, 409, "conflict",
     "canary_version: sentiment v7 is not READY in Triton (ready: v1, v2)"),
    ({"canary_percent": 10}, 422, "invalid_input", "canary_percent is set but there is no canary_version"),
    ({"canary_percent": 101}, 422, "invalid_input", "canary_percent: Input should be less than or equal to 100"),
    ({"weight": 3}, 422, "invalid_input", "weight: Extra inputs are not permitted"),
])
def test_refused_changes(admin, body, status, code, message):
    assert_error(admin.put("/admin/rollouts/sentiment", headers=ADMIN, json=body), status, code, message)
    assert admin.get("/admin/rollouts/sentiment", headers=ADMIN).json()["revision"] == 0


def test_unknown_model(admin):
    assert_error(admin.put("/admin/rollouts/nope", headers=ADMIN, json={"canary_percent": 0}), 404, "not_found",
                 "unknown model 'nope'; available: digits, sentiment")


ACTIONS = ("start", "promote", "rollback", "pause", "resume")


@pytest.mark.parametrize("action", ACTIONS)
def test_rollout_actions_need_an_admin_key(admin, action):
    url = f"/admin/rollouts/sentiment/{action}"
    assert_error(admin.post(url, json={"canary_version": 2}), 401, "unauthorized",
                 "this route needs an API key with the 'admin' scope")
    assert_error(admin.post(url, headers=APP, json={"canary_version": 2}), 403, "forbidden",
                 "the API key 'app' does not have the 'admin' scope")
    assert admin.get("/admin/rollouts/sentiment", headers=ADMIN).json()["revision"] == 0


def start(client, **body):
    response = client.post("/admin/rollouts/sentiment/start", headers=ADMIN,
                           json={"canary_version": 2, "steps": [10, 100], **body})
    assert response.status_code == 200, response.text
    return response.json()


POLICY = {"steps": [10.0, 100.0], "interval_s": 30.0, "min_requests": 100, "max_error_rate": 0.01,
          "max_p99_ratio": 1.5, "min_agreement": None}


def test_start_pause_resume_then_roll_back(admin):
    state = start(admin, reason="try v2")
    assert (state["revision"], state["status"], state["step"], state["steps"]) == (1, "progressing", 0, [10.0, 100.0])
    assert (state["default_version"], state["canary_version"], state["canary_percent"]) == (1, 2, 10.0)
    assert (state["window"], state["windows"]) == (1, [1])
    assert state["history"][-1]["action"] == "start" and state["history"][-1]["by"] == "ops"
    assert state["history"][-1]["reason"] == "try v2"
    shown = admin.get("/admin/rollouts/sentiment", headers=ADMIN).json()
    assert shown["analysis"]["policy"] == POLICY and shown["status"] == "progressing"
    assert admin.get("/admin/rollouts", headers=ADMIN).json()["sentiment"]["analysis"]["policy"] == POLICY
    assert_error(admin.post("/admin/rollouts/sentiment/start", headers=ADMIN, json={"canary_version": 2}), 409,
                 "conflict", "a rollout of sentiment is already progressing (canary v2): promote or roll it back first")
    assert_error(admin.put("/admin/rollouts/sentiment", headers=ADMIN, json={"canary_percent": 50}), 409, "conflict",
                 "a rollout of sentiment is progressing: promote or roll it back first")

    paused = admin.post("/admin/rollouts/sentiment/pause", headers=ADMIN).json()
    assert (paused["revision"], paused["status"], paused["reason"], paused["step_deadline"]) == \
        (2, "paused", "paused by hand", None)
    assert paused["canary_percent"] == 10.0
    assert_error(admin.post("/admin/rollouts/sentiment/pause", headers=ADMIN), 409, "conflict",
                 "no rollout of sentiment is progressing (status paused)")
    assert_error(admin.post("/admin/rollouts/sentiment/start", headers=ADMIN, json={"canary_version": 2}), 409,
                 "conflict", "a rollout of sentiment is already paused (canary v2): promote or roll it back first")

    resumed = admin.post("/admin/rollouts/sentiment/resume", headers=ADMIN, json={"reason": "fixed"}).json()
    assert (resumed["revision"], resumed["status"], resumed["reason"]) == (3, "progressing", None)
    assert (resumed["window"], resumed["windows"]) == (3, [1, 3])
    assert resumed["history"][-1]["reason"] == "fixed"

    back = admin.post("/admin/rollouts/sentiment/rollback", headers=ADMIN, json={"reason": "bad answers"}).json()
    assert (back["revision"], back["status"], back["canary_percent"], back["reason"], back["step"]) == \
        (4, "rolled_back", 0.0, "bad answers", None)
    assert_error(admin.post("/admin/rollouts/sentiment/rollback", headers=ADMIN), 409, "conflict",
                 "sentiment has no canary taking traffic to roll back")
    served = {admin.get("/predict", params={"text": f"after {i}"}, headers=APP).json()["model_version"]
              for i in range(20)}
    assert served == {1}


@pytest.fixture
def admin_flushing(app_client):
    with app_client(api_keys=KEYS, default_model_version=1, rollout_figures_flush_s=0.02) as client:
        yield client


def test_start_counts_predictions_in_its_window(admin_flushing):
    start(admin_flushing, steps=[50, 100])
    routed = [admin_flushing.get("/predict", params={"text": f"text {i}"}, headers=APP).json()["routed_by"]
              for i in range(20)]
    assert 0 < routed.count("canary") < 20
    deadline = time.monotonic() + 5
    while True:
        live = admin_flushing.get("/admin/rollouts/sentiment", headers=ADMIN).json()["analysis"]["live"]
        if live["canary"]["requests"] + live["default"]["requests"] == 20 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert (live["window"], live["canary"]["requests"], live["default"]["requests"]) == \
        (1, routed.count("canary"), routed.count("default"))


def test_promote_by_hand(admin):
    start(admin)
    promoted = admin.post("/admin/rollouts/sentiment/promote", headers=ADMIN).json()
    assert (promoted["status"], promoted["default_version"], promoted["canary_version"], promoted["canary_percent"]) \
        == ("promoted", 2, None, 0.0)
    assert promoted["history"][-1]["action"] == "promote" and promoted["history"][-1]["reason"] == "promoted by hand"
    assert admin.get("/predict", params={"text": "now"}, headers=APP).json()["model_version"] == 2
    assert_error(admin.post("/admin/rollouts/sentiment/promote", headers=ADMIN), 409, "conflict",
                 "sentiment has no canary version to promote")
    again = start(admin, canary_version=1)
    assert (again["status"], again["default_version"], again["canary_version"]) == ("progressing", 2, 1)


@pytest.mark.parametrize("body,status,code,message", [
    ({"canary_version": 7}, 409, "conflict", "canary_version: sentiment v7 is not READY in Triton (ready: v1, v2)"),
    ({"canary_version": 1}, 409, "conflict", "v1 is already the default of sentiment"),
    ({}, 422, "invalid_input", "canary_version: Field required"),
    ({"canary_version": 2, "steps": [50, 25]}, 422, "invalid_input", "steps: Value error, steps must rise"),
    ({"canary_version": 2, "steps": [0, 100]}, 422, "invalid_input",
     "steps: Value error, every step is a percent in (0, 100]"),
    ({"canary_version": 2, "surge": 1}, 422, "invalid_input", "surge: Extra inputs are not permitted"),
])
def test_refused_starts(admin, body, status, code, message):
    assert_error(admin.post("/admin/rollouts/sentiment/start", headers=ADMIN, json=body), status, code, message)
    assert admin.get("/admin/rollouts/sentiment", headers=ADMIN).json()["revision"] == 0


@pytest.mark.parametrize("action,message", [
    ("pause", "no rollout of sentiment is progressing (status idle)"),
    ("resume", "no rollout of sentiment is paused (status idle)"),
    ("rollback", "sentiment has no canary taking traffic to roll back"),
    ("promote", "sentiment has no canary version to promote"),
])
def test_actions_without_a_rollout(admin, action, message):
    assert_error(admin.post(f"/admin/rollouts/sentiment/{action}", headers=ADMIN), 409, "conflict", message)


def test_an_action_refuses_unknown_fields(admin):
    start(admin)
    assert_error(admin.post("/admin/rollouts/sentiment/pause", headers=ADMIN, json={"why": "x"}), 422,
                 "invalid_input", "why: Extra inputs are not permitted")
    assert admin.get("/admin/rollouts/sentiment", headers=ADMIN).json()["status"] == "progressing"


def test_live_figures_are_never_stored(admin):
    start(admin)
    assert admin.get("/admin/rollouts/sentiment", headers=ADMIN).json()["analysis"]["live"] is not None
    back = admin.post("/admin/rollouts/sentiment/rollback", headers=ADMIN).json()
    assert back["analysis"]["live"] is None
    assert admin.get("/admin/rollouts/sentiment", headers=ADMIN).json()["analysis"]["live"] is None


def test_a_start_pins_the_default_serving_now_when_none_is_set(app_client, fake):
    """Without DEFAULT_MODEL_VERSION the highest READY version serves: starting a
    rollout of v2 pins v1 (the highest other one) as the default, so that the
    canary does not serve everyone just by being loaded."""
    with app_client(api_keys=KEYS) as client:
        assert client.get("/predict", params={"text": "x"}, headers=APP).json()["model_version"] == 2
        client.put("/admin/rollouts/sentiment", headers=ADMIN, json={"shadow_percent": 0})  # a stored state
        started = client.post("/admin/rollouts/sentiment/start", headers=ADMIN, json={"canary_version": 2})
        assert started.status_code == 200, started.text
        assert (started.json()["default_version"], started.json()["canary_percent"]) == (1, 5.0)
        versions = {client.post("/predict", json={"text": "x"}, headers={**APP, "X-User-ID": f"u{n}"})
                    .json()["model_version"] for n in range(200)}
        assert versions == {1, 2}


def test_a_start_of_an_unknown_model_is_404(admin):
    assert_error(admin.post("/admin/rollouts/nope/start", headers=ADMIN, json={"canary_version": 2}), 404,
                 "not_found", "unknown model 'nope'; available: digits, sentiment")


def test_an_unreachable_control_redis_is_503_not_500(app_client):
    with app_client(api_keys=KEYS, control_redis_url="redis://127.0.0.1:9/0", jobs_redis_timeout_s=0.5) as client:
        for method, path, body in (("GET", "/admin/rollouts/sentiment", None),
                                   ("PUT", "/admin/rollouts/sentiment", {"canary_percent": 0}),
                                   ("POST", "/admin/rollouts/sentiment/rollback", None)):
            response = client.request(method, path, headers=ADMIN, json=body)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "control_unavailable"
        assert client.get("/predict", params={"text": "still served"}, headers=APP).status_code == 200
