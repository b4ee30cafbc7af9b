"""The models this repository knows how to train and export."""

from __future__ import annotations

from export.specs.base import Dataset, ModelSpec, TrainingPlan

__all__ = ["Dataset", "ModelSpec", "TrainingPlan", "get_spec", "spec_names"]


def _registry() -> dict[str, ModelSpec]:
    from export.specs import digits, sentiment

    return {spec.name: spec for spec in (sentiment.SPEC, digits.SPEC)}


def spec_names() -> list[str]:
    return sorted(_registry())


def get_spec(name: str) -> ModelSpec | None:
    return _registry().get(name)
