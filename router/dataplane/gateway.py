"""What the dataplane needs of Triton. `TritonGateway` is the real one; a
test can hand the app any object with these methods."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from router.dataplane.types import Scores


@dataclass(frozen=True)
class IndexEntry:
    """One row of Triton's repository index."""

    name: str
    version: int | None
    state: str


class Gateway(Protocol):
    async def infer(self, model: str, version: int, input_name: str, output_name: str,
                    tensor: np.ndarray, top_k: int, request_id: str | None) -> list[Scores]:
        """One row of scores per row of `tensor`; raises RouterError subclasses."""

    async def server_ready(self, timeout: float) -> bool:
        """False when Triton is not ready, or does not say so within `timeout` seconds."""

    async def index(self) -> list[IndexEntry]: ...

    async def config(self, model: str) -> dict:
        """The model's config as Triton's JSON model-config API returns it."""

    async def load(self, model: str) -> None: ...

    async def infer_tensors(self, model: str, version: int, inputs: list[tuple[str, str, np.ndarray]],
                            outputs: list[tuple[str, int]], request_id: str | None) -> dict[str, np.ndarray]:
        """Inputs as (name, datatype, array), outputs as (name, classification count; 0: none),
        none for every output; the outputs by name in Triton's order. Raises RouterError subclasses."""

    async def model_metadata(self, model: str, version: int | None) -> dict:
        """Triton's model metadata, as its HTTP API gives it."""

    async def model_config(self, model: str, version: int | None) -> dict:
        """Triton's model config, as its HTTP API gives it (every field, 64-bit integers as numbers)."""

    async def model_ready(self, model: str, version: int | None) -> bool: ...

    async def close(self) -> None: ...
