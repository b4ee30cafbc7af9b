"""A model's rollout state and the changes made to it."""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router.settings import ModelRoute, parse_version

HISTORY = 50  # changes kept per model


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


class Rollout(BaseModel):
    model: str
    revision: int = 0
    default_version: int | None = None
    canary_version: int | None = None
    canary_percent: float = 0.0
    shadow_version: int | None = None
    shadow_percent: float = 0.0
    status: str = "idle"
    history: list[dict] = Field(default_factory=list)

    @classmethod
    def seed(cls, model: str, route: ModelRoute) -> "Rollout":
        """The state a model has before any change: its settings (revision 0)."""
        return cls(model=model, default_version=route.default_version, canary_version=route.canary_version,
                   canary_percent=route.canary_percent)

    def route(self) -> ModelRoute:
        return ModelRoute(default_version=self.default_version, canary_version=self.canary_version,
                          canary_percent=self.canary_percent)

    def apply(self, change: Split, by: str | None, reason: str | None) -> "Rollout":
        """The next revision: the change applied, recorded in the history."""
        fields = change.model_dump(exclude_unset=True, exclude={"reason"})
        updated = self.model_copy(update={**fields, "revision": self.revision + 1})
        Rollout._check(updated)
        entry = {"revision": updated.revision, "at": round(time.time(), 3), "by": by, "set": fields}
        if reason:
            entry["reason"] = reason
        updated.history = [*self.history, entry][-HISTORY:]
        return updated

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
