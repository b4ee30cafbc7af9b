"""Deterministic training and evaluation of a spec's architecture."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from export.specs import Dataset, ModelSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainedModel:
    module: nn.Module
    accuracy: float  # on the held-out split
    train_accuracy: float
    seconds: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


@torch.no_grad()
def predict_proba(module: nn.Module, x: np.ndarray, batch: int) -> np.ndarray:
    module.eval()
    parts = [module(torch.from_numpy(x[i : i + batch])).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.float32)


def accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    probs = predict_proba(module, x, batch)
    return float((probs.argmax(axis=1) == y).mean())


def train(spec: ModelSpec, arch: str, data: Dataset, seed: int, progress: Progress,
          epochs: int | None = None) -> TrainedModel:
    """Train `arch` on `data` with a fixed seed. The graph ends in softmax,
    so the loss is the negative log of the predicted probabilities."""
    seed_everything(seed)
    plan = spec.plans[arch]
    n_epochs = plan.epochs if epochs is None else epochs
    module = spec.architectures[arch]()
    optimiser = torch.optim.Adam(module.parameters(), lr=plan.learning_rate, weight_decay=plan.weight_decay)
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for epoch in range(1, n_epochs + 1):
        module.train()
        total = 0.0
        for idx in torch.randperm(len(x), generator=order).split(plan.batch_size):
            probs = module(x[idx])
            loss = nn.functional.nll_loss(torch.log(probs.clamp(min=1e-8)), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
        if epoch == n_epochs or epoch % max(1, n_epochs // 5) == 0:
            progress(f"epoch {epoch}/{n_epochs}  loss {total / len(x):.4f}")
    module.eval()
    return TrainedModel(
        module=module,
        accuracy=accuracy(module, data.x_test, data.y_test, spec.eval_batch),
        train_accuracy=accuracy(module, data.x_train, data.y_train, spec.eval_batch),
        seconds=time.perf_counter() - started,
    )
