"""A model's rollout state, the changes made to it, and the transitions of an
analysed rollout (start, next step, hold, pause, resume, roll back, promote).
Pure logic: the store writes each result as the next revision."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.settings import ModelRoute, parse_version

HISTORY = 50  # changes kept per model

Status = Literal["idle", "progressing", "paused", "promoted", "rolled_back"]


class Split(BaseModel):
    """The routing fields a change may set; a field left out keeps its value."""

    model_config = ConfigDict(extra="forbid")

    default_version: int | None = None
    canary_version: int | None = None
    canary_percent: float | None = Field(None, ge=0.0, le=100.0)
    shadow_version: int | None = None
    shadow_percent: float | None = Field(None, ge=0.0, le=100.0)

    @field_validator("default_version", "canary_version", "shadow_version", mode="before")
    @classmethod
    def _version(cls, value):
        return parse_version(value)


class Change(Split):
    """PUT /admin/rollouts/{model}: any of the split's fields, and why."""

    reason: str | None = Field(None, max_length=500)


class Action(BaseModel):
    """POST /admin/rollouts/{model}/promote|rollback|pause|resume: why, optionally."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500)


class Policy(BaseModel):
    """How an analysed rollout proceeds, and what fails it."""

    model_config = ConfigDict(extra="forbid")

    steps: list[float] = Field(default=[5, 25, 50, 100], min_length=1, max_length=20,
                               description="canary percents, rising; the last is normally 100")
    interval_s: float = Field(default=30.0, ge=0.1, le=86_400, description="how long each step is watched")
    min_requests: int = Field(default=100, ge=1, le=10_000_000,
                              description="canary requests a step needs before it can pass")
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0, description="canary errors / canary requests")
    max_p99_ratio: float = Field(default=1.5, ge=1.0, le=1000.0, description="canary p99 / default p99")
    min_agreement: float | None = Field(default=None, ge=0.0, le=1.0,
                                        description="shadow agreement of the canary with the default, when set")

    @field_validator("steps")
    @classmethod
    def _rising(cls, steps: list[float]) -> list[float]:
        if any(not 0 < s <= 100 for s in steps):
            raise ValueError("every step is a percent in (0, 100]")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError("steps must rise")
        return steps


class Start(Policy):
    """POST /admin/rollouts/{model}/start."""

    canary_version: int
    reason: str | None = Field(None, max_length=500)

    @field_validator("canary_version", mode="before")
    @classmethod
    def _version(cls, value):
        version = parse_version(value)
        if version is None:
            raise ValueError("canary_version is required")
        return version

    def policy(self) -> Policy:
        return Policy(**self.model_dump(exclude={"canary_version", "reason"}))


class Analysis(BaseModel):
    policy: Policy | None = None
    p99_floor_ms: float | None = None
    verdict: dict | None = None  # the last judgement and its figures
    live: dict | None = None  # the current window's figures, when read through the API (never stored)


class Rollout(BaseModel):
    model: str
    revision: int = 0
    default_version: int | None = None
    canary_version: int | None = None
    canary_percent: float = 0.0
    shadow_version: int | None = None
    shadow_percent: float = 0.0
    status: Status = "idle"
    step: int | None = None  # index into steps while progressing or paused
    steps: list[float] = Field(default_factory=list)
    reason: str | None = None  # why it is paused or was rolled back
    analysis: Analysis = Field(default_factory=Analysis)
    # The measurement window figures are counted under (a revision number), when it began,
    # the windows of this rollout so far, when the step ends, and its held intervals.
    window: int = 0
    window_started_at: float = 0.0
    windows: list[int] = Field(default_factory=list)
    step_deadline: float | None = None
    holds: int = 0
    history: list[dict] = Field(default_factory=list)

    @classmethod
    def seed(cls, model: str, route: ModelRoute) -> "Rollout":
        """The state a model has before any change: its settings (revision 0)."""
        return cls(model=model, default_version=route.default_version, canary_version=route.canary_version,
                   canary_percent=route.canary_percent, shadow_version=route.shadow_version,
                   shadow_percent=route.shadow_percent)

    def route(self) -> ModelRoute:
        return ModelRoute(default_version=self.default_version, canary_version=self.canary_version,
                          canary_percent=self.canary_percent, shadow_version=self.shadow_version,
                          shadow_percent=self.shadow_percent, window=self.window if self.live else None)

    @property
    def live(self) -> bool:
        """Figures are counted: a canary or a shadow takes traffic."""
        return (self.canary_version is not None and self.canary_percent > 0) or \
            (self.shadow_version is not None and self.shadow_percent > 0)

    def next(self, fields: dict, by: str | None, reason: str | None, action: str,
             now: float | None = None) -> "Rollout":
        """The next revision with `fields` set, recorded in the history. A change
        to the split opens a new measurement window."""
        now = time.time() if now is None else now
        revision = self.revision + 1
        update = {**fields, "revision": revision}
        if {"canary_version", "canary_percent", "default_version", "shadow_version", "shadow_percent",
                "window"} & set(fields) and "window" not in fields:
            update.update(window=revision, window_started_at=now)
        updated = self.model_copy(update=update, deep=True)
        Rollout._check(updated)
        if updated.window != self.window and updated.status in ("progressing", "paused") \
                and updated.window not in updated.windows:
            updated.windows = [*updated.windows, updated.window]  # the rollout's figures include it
        entry = {"revision": revision, "at": round(now, 3), "by": by, "action": action,
                 "set": {k: v for k, v in fields.items() if k in SHOWN}}
        if reason:
            entry["reason"] = reason
        updated.history = [*self.history, entry][-HISTORY:]
        return updated

    def apply(self, change: Split, by: str | None, reason: str | None) -> "Rollout":
        """A change by hand (PUT)."""
        fields = change.model_dump(exclude_unset=True, exclude={"reason"})
        active = self.status in ("progressing", "paused")
        if active and {"default_version", "canary_version", "canary_percent"} & set(fields):
            raise RolloutConflict(f"a rollout of {self.model} is {self.status}: promote or roll it back first")
        if active and self.analysis.policy is not None and self.analysis.policy.min_agreement is not None \
                and {"shadow_version", "shadow_percent"} & set(fields):
            raise RolloutConflict(f"the rollout of {self.model} is judged on its shadow's agreement: "
                                  "its shadow cannot change until it ends")
        if {"default_version", "canary_version", "canary_percent"} & set(fields) and self.status in ("promoted",
                                                                                                    "rolled_back"):
            fields["status"] = "idle"
        return self.next(fields, by, reason, "set")

    # --- an analysed rollout ---------------------------------------------------

    def start(self, start: Start, by: str | None, now: float | None = None,
              serving: int | None = None) -> "Rollout":
        """`serving`: the version the default serves now, pinned as the default
        when none is set (else the canary, once loaded, would be the highest
        READY version, and with it the default)."""
        now = time.time() if now is None else now
        if self.status in ("progressing", "paused"):
            raise RolloutConflict(f"a rollout of {self.model} is already {self.status} "
                                  f"(canary v{self.canary_version}): promote or roll it back first")
        default = self.default_version if self.default_version is not None else serving
        if default is None:
            raise RolloutConflict(f"{self.model} has no other READY version to compare v{start.canary_version} with")
        if start.canary_version == default:
            raise RolloutConflict(f"v{start.canary_version} is already the default of {self.model}")
        policy = start.policy()
        fields = {"default_version": default, "canary_version": start.canary_version,
                  "canary_percent": policy.steps[0], "status": "progressing",
                  "step": 0, "steps": policy.steps, "reason": None, "holds": 0,
                  "step_deadline": now + policy.interval_s,
                  "analysis": Analysis(policy=policy, p99_floor_ms=self.analysis.p99_floor_ms)}
        if policy.min_agreement is not None:  # the default's traffic also runs on the canary, compared
            fields.update(shadow_version=start.canary_version, shadow_percent=100.0)
        updated = self.next(fields, by, start.reason, "start", now)
        updated.windows = [updated.window]
        return updated

    def advance(self, verdict: dict, now: float | None = None) -> "Rollout":
        """The step passed: the next one, or promotion after the last."""
        now = time.time() if now is None else now
        assert self.step is not None and self.analysis.policy is not None
        if self.step + 1 >= len(self.steps):
            return self.promote(None, "every step passed", verdict, now)
        step = self.step + 1
        updated = self.next({"step": step, "canary_percent": self.steps[step], "holds": 0,
                             "step_deadline": now + self.analysis.policy.interval_s,
                             "analysis": self._with(verdict)}, None, verdict.get("reason"), "step", now)
        return updated

    def hold(self, verdict: dict, max_holds: int, now: float | None = None) -> "Rollout":
        """Too few figures to judge the step when its interval ended (requests, timings,
        comparisons): one more interval, or a pause."""
        now = time.time() if now is None else now
        assert self.analysis.policy is not None
        holds = self.holds + 1
        if holds >= max_holds:
            reason = (f"paused at {self.canary_percent:g}% after {holds} held intervals: "
                      f"{verdict.get('reason') or 'too few figures to judge the step'}")
            return self.next({"status": "paused", "holds": holds, "reason": reason, "step_deadline": None,
                              "analysis": self._with(verdict)}, None, reason, "pause", now)
        return self.next({"holds": holds, "step_deadline": now + self.analysis.policy.interval_s,
                          "analysis": self._with(verdict)}, None, verdict.get("reason"), "hold", now)

    def pause(self, by: str | None, reason: str | None, now: float | None = None) -> "Rollout":
        if self.status != "progressing":
            raise RolloutConflict(f"no rollout of {self.model} is progressing (status {self.status})")
        return self.next({"status": "paused", "step_deadline": None, "reason": reason or "paused by hand"},
                         by, reason, "pause", now)

    def resume(self, by: str | None, reason: str | None, now: float | None = None) -> "Rollout":
        now = time.time() if now is None else now
        if self.status != "paused" or self.analysis.policy is None:
            raise RolloutConflict(f"no rollout of {self.model} is paused (status {self.status})")
        updated = self.next({"status": "progressing", "holds": 0, "reason": None, "window": self.revision + 1,
                             "window_started_at": now, "step_deadline": now + self.analysis.policy.interval_s},
                            by, reason, "resume", now)
        return updated

    def rollback(self, by: str | None, reason: str, verdict: dict | None = None,
                 now: float | None = None) -> "Rollout":
        if self.canary_version is None or (self.canary_percent == 0 and self.status not in ("progressing", "paused")):
            raise RolloutConflict(f"{self.model} has no canary taking traffic to roll back")
        fields = {"canary_percent": 0.0, "status": "rolled_back", "step": None, "step_deadline": None,
                  "reason": reason}
        if self.shadow_version == self.canary_version:
            fields["shadow_percent"] = 0.0
        if verdict is not None:
            fields["analysis"] = self._with(verdict)
        return self.next(fields, by, reason, "rollback", now)

    def promote(self, by: str | None, reason: str | None, verdict: dict | None = None,
                now: float | None = None) -> "Rollout":
        if self.canary_version is None:
            raise RolloutConflict(f"{self.model} has no canary version to promote")
        fields = {"default_version": self.canary_version, "canary_version": None, "canary_percent": 0.0,
                  "status": "promoted", "step": None, "step_deadline": None, "reason": None}
        if self.shadow_version == self.canary_version:
            fields.update(shadow_version=None, shadow_percent=0.0)
        if verdict is not None:
            fields["analysis"] = self._with(verdict)
        return self.next(fields, by, reason, "promote", now)

    def _with(self, verdict: dict) -> Analysis:
        return self.analysis.model_copy(update={"verdict": verdict})

    @model_validator(mode="after")
    def _valid(self) -> "Rollout":
        Rollout._check(self)
        return self

    @staticmethod
    def _check(state: "Rollout") -> None:
        if state.canary_percent > 0 and state.canary_version is None:
            raise ValueError("canary_percent is set but there is no canary_version")
        if state.shadow_percent > 0 and state.shadow_version is None:
            raise ValueError("shadow_percent is set but there is no shadow_version")


# what a history entry shows of the fields a transition set
SHOWN = ("default_version", "canary_version", "canary_percent", "shadow_version", "shadow_percent", "status",
         "step", "steps", "reason")


class RolloutConflict(Exception):
    """A transition that the model's current state does not allow (409)."""
