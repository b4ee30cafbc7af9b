"""A small hand-written Triton for unit tests: the real configs of
model_repository/ (as Triton's JSON model-config API gives them), versions
whose state a test sets, and a deterministic classifier."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from router.dataplane.gateway import IndexEntry
from router.errors import TritonUnavailable, VersionUnavailable
from tests.conftest import MODEL_REPOSITORY


def triton_config(model: str) -> dict:
    """config.pbtxt as Triton's model-config API returns it (the gRPC client's as_json)."""
    text = (MODEL_REPOSITORY / model / "config.pbtxt").read_text()
    message = text_format.Parse(text, mc.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@dataclass
class Call:
    model: str
    version: int
    rows: int
    request_id: str | None


class FakeTriton:
    """Every model starts with versions 1 and 2 READY. A test may change
    `states`, make a version fail with `failures[(model, version)]`, stop
    the server with `up = False`, or hold inferences with `hold = True`."""

    def __init__(self, models: tuple[str, ...] = ("sentiment", "digits")) -> None:
        self.configs = {m: triton_config(m) for m in models}
        self.states: dict[str, dict[int, str]] = {m: {1: "READY", 2: "READY"} for m in models}
        self.failures: dict[tuple[str, int], BaseException] = {}
        self.up = True
        self.hold = False
        self.calls: list[Call] = []
        self.loads: list[str] = []

    @staticmethod
    def scores(row: np.ndarray, version: int, labels: list[str]) -> list[float]:
        """A deterministic distribution over labels from the row's bytes and the version."""
        base = int(row.astype(np.int64).sum()) + 31 * version
        raw = np.array([(base * (i + 3)) % 97 + 1 for i in range(len(labels))], dtype=np.float64)
        return list(raw / raw.sum())

    def expected(self, model: str, version: int, row: np.ndarray, top_k: int = 1) -> list[tuple[str, float]]:
        labels = self.configs[model]["parameters"]["labels"]["string_value"].split(",")
        ranked = sorted(zip(labels, self.scores(row, version, labels)), key=lambda p: -p[1])
        return [(label, float(np.float32(score))) for label, score in ranked[:top_k]]

    def _check_up(self) -> None:
        if not self.up:
            raise TritonUnavailable("Triton is unreachable")

    async def infer(self, model, version, input_name, output_name, tensor, top_k, request_id):
        self._check_up()
        self.calls.append(Call(model, version, len(tensor), request_id))
        while self.hold:
            await asyncio.sleep(0.005)
        failure = self.failures.get((model, version))
        if failure is not None:
            raise failure
        if self.states[model].get(version) != "READY":
            raise VersionUnavailable(f"Request for unknown model: '{model}' version {version} is not at ready state")
        assert input_name == self.configs[model]["input"][0]["name"]
        return [self.expected(model, version, row, top_k) for row in tensor]

    async def server_ready(self, timeout: float) -> bool:
        return self.up

    async def index(self) -> list[IndexEntry]:
        self._check_up()
        return [IndexEntry(m, v, s) for m, versions in self.states.items() for v, s in versions.items()]

    async def config(self, model: str) -> dict:
        self._check_up()
        return self.configs[model]

    async def load(self, model: str) -> None:
        self._check_up()
        self.loads.append(model)
        self.states[model] = {v: "READY" for v in self.states[model]}

    async def close(self) -> None:
        pass
