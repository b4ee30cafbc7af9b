"""/admin/rollouts over a FakeTriton, without Redis (the state in process)."""

from __future__ import annotations

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
