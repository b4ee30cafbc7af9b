"""The models this repository knows how to train and export.

Each model's spec is `SPEC` in the module `export.specs.<name>`. The names
are known without importing those modules, so torch is imported only when a
spec itself is asked for.
"""

from __future__ import annotations

from importlib import import_module

from export.errors import ExportError
from export.specs.base import Dataset, ModelSpec, TrainingPlan

__all__ = ["Dataset", "ModelSpec", "TrainingPlan", "check_name", "get_spec", "resolve_spec", "spec_names"]

_NAMES = ("digits", "sentiment")


def spec_names() -> list[str]:
    return sorted(_NAMES)


def check_name(name: str) -> None:
    """Raise the error for a model name no spec describes."""
    if name not in _NAMES:
        raise ExportError(f"unknown model {name!r}; known models: {', '.join(spec_names())}")


def _load(name: str) -> ModelSpec:
    return import_module(f"export.specs.{name}").SPEC


def get_spec(name: str) -> ModelSpec | None:
    return _load(name) if name in _NAMES else None


def resolve_spec(name: str) -> ModelSpec:
    check_name(name)
    return _load(name)
