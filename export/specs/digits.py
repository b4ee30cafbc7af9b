"""`digits`: an 8x8 grayscale image -> 0..9, from scikit-learn's bundled
digits data set (1,797 images of handwritten digits, UCI ML repository).

The graph takes UINT8 pixels in 0..255 with the ink bright and the
background dark (scikit-learn's 0..16 values scaled up), and normalises them
itself."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from export.specs.base import Dataset, ModelSpec, TrainingPlan

SIDE = 8
_HELD_OUT = 0.25


def load_data(seed: int) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=_HELD_OUT,
        random_state=seed, stratify=digits.target,
    )
    return Dataset(
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        description=(
            f"scikit-learn digits ({len(images)} 8x8 images), stratified split "
            f"with seed {seed}, {int(_HELD_OUT * 100)}% held out"
        ),
    )


def _normalise(image: torch.Tensor) -> torch.Tensor:
    return image.to(torch.float32) * (1.0 / 255.0)


class Linear(nn.Module):
    """v1: multinomial logistic regression on the 64 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(SIDE * SIDE, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(_normalise(image).flatten(1)), dim=-1)


class SmallCNN(nn.Module):
    """v2: two 3x3 convolutions and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = _normalise(image).unsqueeze(1)
        return torch.softmax(self.head(self.features(x)), dim=-1)


SPEC = ModelSpec(
    name="digits",
    labels=tuple(str(d) for d in range(10)),
    input_name="image",
    input_dims=(SIDE, SIDE),
    output_name="probabilities",
    parameters={
        "input_kind": "image_gray",
        "image_height": str(SIDE),
        "image_width": str(SIDE),
        "pixel_range": "0-255",
        "ink": "bright",
    },
    load_data=load_data,
    architectures={"linear": Linear, "cnn": SmallCNN},
    plans={
        "linear": TrainingPlan(epochs=60, batch_size=64, learning_rate=1e-2),
        "cnn": TrainingPlan(epochs=40, batch_size=64, learning_rate=2e-3),
    },
    default_arch="cnn",
)
