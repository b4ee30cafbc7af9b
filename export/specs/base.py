"""What every example model declares: data, architectures, Triton signature."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import numpy as np
    from torch import nn


@dataclass(frozen=True)
class Dataset:
    """A deterministic train / held-out split. Inputs are already in the
    exact dtype and shape the ONNX graph takes (without the batch axis)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    description: str


@dataclass(frozen=True)
class TrainingPlan:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    """One servable model: how to get its data, which architectures build it,
    and the tensor signature its Triton config declares."""

    name: str
    labels: tuple[str, ...]
    input_name: str
    input_dims: tuple[int, ...]
    output_name: str
    parameters: dict[str, str]
    load_data: Callable[[int], Dataset]
    architectures: dict[str, Callable[[], nn.Module]]
    plans: dict[str, TrainingPlan]
    default_arch: str
    # Inputs are fed to the model in this many rows at a time when it is
    # evaluated, so a large held-out split never needs one huge batch.
    eval_batch: int = field(default=512)

    @property
    def output_dims(self) -> tuple[int, ...]:
        return (len(self.labels),)
