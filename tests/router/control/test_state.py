"""A rollout's transitions as pure logic: start, every step to promotion,
holds, pause and resume, roll back, changes by hand, and the policy's checks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router.control.state import HISTORY, Change, Policy, Rollout, RolloutConflict, Start
from router.settings import ModelRoute

T0 = 1_000.0


def started(steps=(10, 50, 100), **policy) -> Rollout:
    state = Rollout(model="sentiment", default_version=1)
    return state.start(Start(canary_version=2, steps=list(steps), interval_s=30, **policy), "ops", now=T0)


def test_start_opens_step_zero_in_a_new_window():
    state = started()
    assert (state.revision, state.status, state.step, state.steps) == (1, "progressing", 0, [10, 50, 100])
    assert (state.canary_version, state.canary_percent, state.default_version) == (2, 10.0, 1)
    assert (state.window, state.windows, state.window_started_at, state.step_deadline) == (1, [1], T0, T0 + 30)
    assert (state.shadow_version, state.shadow_percent) == (None, 0.0)
    assert state.analysis.policy == Policy(steps=[10, 50, 100], interval_s=30)
    assert state.history[-1] == {"revision": 1, "at": T0, "by": "ops", "action": "start",
                                 "set": {"default_version": 1, "canary_version": 2, "canary_percent": 10.0,
                                         "status": "progressing", "step": 0, "steps": [10.0, 50.0, 100.0],
                                         "reason": None}}
    assert state.route() == ModelRoute(default_version=1, canary_version=2, canary_percent=10, window=1)


def test_every_step_passed_promotes_the_canary():
    state = started()
    revisions, windows = [state.revision], []
    for step, percent in ((1, 50.0), (2, 100.0)):
        state = state.advance({"result": "pass", "reason": "ok"}, now=T0 + 30 * step)
        assert (state.step, state.canary_percent, state.status, state.holds) == (step, percent, "progressing", 0)
        assert state.step_deadline == T0 + 30 * (step + 1)
        assert state.window == state.revision and state.analysis.verdict == {"result": "pass", "reason": "ok"}
        revisions.append(state.revision)
        windows.append(state.window)
    assert state.windows == [1, *windows]
    state = state.advance({"result": "pass"}, now=T0 + 90)
    revisions.append(state.revision)
    assert revisions == [1, 2, 3, 4]
    assert (state.status, state.default_version, state.canary_version, state.canary_percent) == \
        ("promoted", 2, None, 0.0)
    assert (state.step, state.step_deadline, state.reason) == (None, None, None)
    assert [h["action"] for h in state.history] == ["start", "step", "step", "promote"]
    assert state.history[-1]["reason"] == "every step passed" and state.history[-1]["by"] is None
    assert state.route().window is None, "nothing is live once promoted"


def test_holds_keep_the_window_then_pause_after_max_holds():
    state = started(min_requests=100)
    for holds in (1, 2):
        state = state.hold({"result": "hold"}, max_holds=3, now=T0 + 30 * holds)
        assert (state.status, state.holds, state.step_deadline) == ("progressing", holds, T0 + 30 * (holds + 1))
        assert (state.window, state.windows) == (1, [1]), "a hold keeps counting in the same window"
    state = state.hold({"result": "hold", "reason": "40 of 100 canary requests"}, max_holds=3, now=T0 + 90)
    assert (state.status, state.holds, state.step_deadline) == ("paused", 3, None)
    assert state.reason == "paused at 10% after 3 held intervals: 40 of 100 canary requests"
    assert [h["action"] for h in state.history] == ["start", "hold", "hold", "pause"]
    assert state.canary_percent == 10.0 and state.route().window == 1, "a paused canary still takes its share"


def test_pause_then_resume_opens_a_new_window():
    state = started().pause("ops", None, now=T0 + 5)
    assert (state.status, state.reason, state.step_deadline, state.window) == ("paused", "paused by hand", None, 1)
    resumed = state.resume("ops", "looked fine", now=T0 + 100)
    assert (resumed.status, resumed.reason, resumed.holds, resumed.step) == ("progressing", None, 0, 0)
    assert (resumed.revision, resumed.window, resumed.windows) == (3, 3, [1, 3])
    assert (resumed.window_started_at, resumed.step_deadline) == (T0 + 100, T0 + 130)
    assert resumed.history[-1]["action"] == "resume" and resumed.history[-1]["reason"] == "looked fine"


def test_pause_and_resume_need_the_right_status():
    with pytest.raises(RolloutConflict, match=r"no rollout of sentiment is progressing \(status idle\)"):
        Rollout(model="sentiment", default_version=1).pause("ops", None)
    with pytest.raises(RolloutConflict, match=r"no rollout of sentiment is paused \(status progressing\)"):
        started().resume("ops", None)


def test_rollback_sends_the_share_back_and_clears_a_shadow_that_was_the_canary():
    state = started(min_agreement=0.9)
    assert (state.shadow_version, state.shadow_percent) == (2, 100.0)
    back = state.rollback("ops", "bad answers", now=T0 + 1)
    assert (back.canary_percent, back.shadow_percent, back.status, back.reason) == (0.0, 0.0, "rolled_back",
                                                                                    "bad answers")
    assert (back.step, back.step_deadline, back.canary_version) == (None, None, 2)
    assert back.route().window is None
    with pytest.raises(RolloutConflict, match="sentiment has no canary taking traffic to roll back"):
        back.rollback("ops", "again")


def test_rollback_keeps_another_shadow():
    state = Rollout(model="sentiment", default_version=1, shadow_version=3, shadow_percent=20)
    back = state.start(Start(canary_version=2), "ops", now=T0).rollback("ops", "no")
    assert (back.shadow_version, back.shadow_percent, back.canary_percent) == (3, 20.0, 0.0)


def test_start_refused_while_a_rollout_is_under_way_or_of_the_default():
    with pytest.raises(RolloutConflict, match=r"already progressing \(canary v2\)"):
        started().start(Start(canary_version=3), "ops")
    with pytest.raises(RolloutConflict, match=r"already paused \(canary v2\)"):
        started().pause("ops", None).start(Start(canary_version=3), "ops")
    with pytest.raises(RolloutConflict, match="v1 is already the default of sentiment"):
        Rollout(model="sentiment", default_version=1).start(Start(canary_version=1), "ops")
    again = started().rollback("ops", "no").start(Start(canary_version=3, steps=[50, 100]), "ops", now=T0)
    assert (again.status, again.canary_version, again.canary_percent, again.reason) == ("progressing", 3, 50.0, None)
    assert again.windows == [again.window] == [again.revision]


def test_start_pins_the_version_serving_now_as_the_default_when_none_is_set():
    unset = Rollout(model="sentiment")
    state = unset.start(Start(canary_version=2), "ops", now=T0, serving=1)
    assert (state.default_version, state.canary_version, state.status) == (1, 2, "progressing")
    assert state.history[-1]["set"]["default_version"] == 1
    kept = Rollout(model="sentiment", default_version=3).start(Start(canary_version=2), "ops", serving=1)
    assert kept.default_version == 3, "a default set by hand is kept"
    with pytest.raises(RolloutConflict, match="sentiment has no other READY version to compare v2 with"):
        unset.start(Start(canary_version=2), "ops")
    with pytest.raises(RolloutConflict, match="v2 is already the default of sentiment"):
        unset.start(Start(canary_version=2), "ops", serving=2)


def test_changes_by_hand_while_progressing():
    state = started()
    for change in (Change(canary_percent=50), Change(canary_version=3), Change(default_version=2)):
        with pytest.raises(RolloutConflict, match="a rollout of sentiment is progressing: promote or roll it back"):
            state.apply(change, "ops", None)
    shadowed = state.apply(Change(shadow_version=3, shadow_percent=10), "ops", "compare v3")
    assert (shadowed.status, shadowed.shadow_version, shadowed.shadow_percent) == ("progressing", 3, 10.0)
    assert shadowed.canary_percent == 10.0 and shadowed.revision == 2


def test_a_shadow_change_while_progressing_keeps_its_window_in_the_rollout():
    shadowed = started().apply(Change(shadow_version=3, shadow_percent=10), "ops", None)
    assert shadowed.window in shadowed.windows


def test_a_change_by_hand_after_a_rollout_makes_it_idle():
    promoted = started().promote("ops", "now")
    assert promoted.apply(Change(canary_version=3, canary_percent=5), "ops", None).status == "idle"
    assert promoted.apply(Change(shadow_version=3, shadow_percent=5), "ops", None).status == "promoted"


def test_min_agreement_shadows_all_of_the_default_on_the_canary():
    state = started(min_agreement=0.95)
    assert (state.shadow_version, state.shadow_percent, state.analysis.policy.min_agreement) == (2, 100.0, 0.95)
    for change in (Change(shadow_version=3), Change(shadow_percent=10), Change(shadow_version=None)):
        with pytest.raises(RolloutConflict, match="the rollout of sentiment is judged on its shadow's agreement"):
            state.apply(change, "ops", None)
        with pytest.raises(RolloutConflict, match="judged on its shadow's agreement"):
            state.pause("ops", None).apply(change, "ops", None)
    promoted = state.promote("ops", None)
    assert (promoted.default_version, promoted.shadow_version, promoted.shadow_percent) == (2, None, 0.0)


@pytest.mark.parametrize("steps,message", [
    ([50, 25], "steps must rise"),
    ([25, 25], "steps must rise"),
    ([0, 50], r"every step is a percent in \(0, 100\]"),
    ([50, 100.5], r"every step is a percent in \(0, 100\]"),
    ([], "at least 1 item"),
])
def test_policy_refuses_bad_steps(steps, message):
    with pytest.raises(ValidationError, match=message):
        Policy(steps=steps)
    with pytest.raises(ValidationError, match=message):
        Start(canary_version=2, steps=steps)


def test_start_needs_a_canary_version():
    with pytest.raises(ValidationError, match="canary_version is required"):
        Start(canary_version=None)
    assert Start(canary_version="3").canary_version == 3


def test_history_is_capped():
    state = Rollout(model="sentiment", default_version=1)
    for _ in range(HISTORY + 10):
        state = state.apply(Change(default_version=1), "ops", None)
    assert state.revision == HISTORY + 10
    assert len(state.history) == HISTORY == 50
    assert [h["revision"] for h in state.history] == list(range(11, HISTORY + 11))


def test_route_window_is_none_when_nothing_is_live():
    assert Rollout(model="sentiment", default_version=1).route().window is None
    zero = Rollout(model="sentiment", default_version=1).apply(Change(canary_version=2, canary_percent=0), "o", None)
    assert zero.route().window is None
    shadow = zero.apply(Change(shadow_version=2, shadow_percent=5), "o", None)
    assert shadow.route().window == shadow.revision == 2


def test_seed_keeps_a_shadow_from_settings():
    route = ModelRoute(default_version=1, shadow_version=2, shadow_percent=10)
    seeded = Rollout.seed("digits", route).route()
    assert (seeded.shadow_version, seeded.shadow_percent) == (2, 10.0)
