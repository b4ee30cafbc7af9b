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
from router.errors import NotFound, TritonUnavailable, VersionUnavailable
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

    async def _run(self, model: str, version: int, rows: int, request_id) -> None:
        """What every inference goes through: up, recorded, held, failed or not ready as the test set."""
        self._check_up()
        self.calls.append(Call(model, version, rows, request_id))
        while self.hold:
            await asyncio.sleep(0.005)
        failure = self.failures.get((model, version))
        if failure is not None:
            raise failure
        if self.states[model].get(version) != "READY":
            raise VersionUnavailable(f"Request for unknown model: '{model}' version {version} is not at ready state")

    async def infer(self, model, version, input_name, output_name, tensor, top_k, request_id):
        await self._run(model, version, len(tensor), request_id)
        assert input_name == self.configs[model]["input"][0]["name"]
        return [self.expected(model, version, row, top_k) for row in tensor]

    async def infer_tensors(self, model, version, inputs, outputs, request_id):
        """Labelled outputs: `scores` of the first input's rows (what /predict would give);
        others: (the row's sum over every input + version) x (1, 2, 3, ...) along each row."""
        await self._run(model, version, inputs[0][2].shape[0], request_id)
        config = self.configs[model]
        declared = {i["name"]: i["data_type"].removeprefix("TYPE_").replace("STRING", "BYTES") for i in config["input"]}
        assert all(declared[name] == datatype for name, datatype, _ in inputs), inputs
        labels = config.get("parameters", {}).get("labels", {}).get("string_value", "").split(",")
        sums = sum(np.array([sum(len(x) for x in row.ravel()) if array.dtype == object
                             else row.astype(np.float64).sum() for row in array]) for _, _, array in inputs)
        specs = {o["name"]: o for o in config["output"]}
        out = {}
        for name, count in outputs or [(o["name"], 0) for o in config["output"]]:
            spec = specs[name]
            if spec.get("label_filename"):
                values = np.array([self.scores(array_row, version, labels) for array_row in inputs[0][2]],
                                  dtype=np.float32)
            else:
                width = int(np.prod([int(d) for d in spec["dims"]]))
                values = ((sums[:, None] + version) * np.arange(1, width + 1)).astype(np.float32)
            out[name] = self.classify(values, count, labels if spec.get("label_filename") else []) if count else values
        return out

    @staticmethod
    def classify(values: np.ndarray, count: int, labels: list[str]) -> np.ndarray:
        """Triton's classification extension: the top `count` of each row as b"score:index[:label]"."""
        rows = []
        for row in values:
            top = sorted(range(len(row)), key=lambda i: (-row[i], i))[:count]
            rows.append([f"{row[i]:f}:{i}{':' + labels[i] if labels else ''}".encode() for i in top])
        array = np.empty((len(rows), len(rows[0])), dtype=object)
        array[:] = rows
        return array

    def _model_version(self, model: str, version: int | None) -> None:
        self._check_up()
        if model not in self.configs:
            raise NotFound(f"Request for unknown model: '{model}' is not found")
        if version is not None and self.states[model].get(version) != "READY":
            raise VersionUnavailable(f"Request for unknown model: '{model}' version {version} is not at ready state")

    async def model_metadata(self, model: str, version: int | None) -> dict:
        self._model_version(model, version)
        config = self.configs[model]
        batch = [-1] if int(config.get("max_batch_size", 0)) > 0 else []

        def tensors(entries):
            return [{"name": e["name"], "datatype": e["data_type"].removeprefix("TYPE_").replace("STRING", "BYTES"),
                     "shape": batch + [int(d) for d in e["dims"]]} for e in entries]
        versions = [version] if version is not None else sorted(
            v for v, s in self.states[model].items() if s == "READY")
        return {"name": model, "versions": [str(v) for v in versions], "platform": config.get("platform", ""),
                "inputs": tensors(config["input"]), "outputs": tensors(config["output"])}

    async def model_config(self, model: str, version: int | None) -> dict:
        self._model_version(model, version)
        return self.configs[model]

    async def model_ready(self, model: str, version: int | None) -> bool:
        self._check_up()
        versions = self.states.get(model, {})
        return versions.get(version) == "READY" if version is not None else "READY" in versions.values()

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
