"""PyTorch -> ONNX with a dynamic batch axis, and the parity check."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.constants import IR_VERSION, MAX_BATCH_SIZE, OPSET
from export.specs import ModelSpec

PARITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Parity:
    max_abs_error: float
    rows: int

    @property
    def ok(self) -> bool:
        return self.max_abs_error <= PARITY_TOLERANCE


def to_onnx(module: nn.Module, spec: ModelSpec, example: np.ndarray) -> bytes:
    """Serialised ONNX bytes; input `spec.input_name`, output `spec.output_name`."""
    import onnx

    module.eval()
    sample = torch.from_numpy(example[:2])
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH_SIZE)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (sample,), input_names=[spec.input_name], output_names=[spec.output_name],
            dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, verbose=False,
        )
    proto = program.model_proto
    proto.ir_version = IR_VERSION
    proto.producer_name = "export"
    onnx.checker.check_model(proto, full_check=True)
    buffer = io.BytesIO()
    onnx.save_model(proto, buffer)
    return buffer.getvalue()


def run_onnx(model: bytes | Path, x: np.ndarray, input_name: str) -> np.ndarray:
    import onnxruntime as ort

    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: x})[0]


def check_parity(module: nn.Module, model: bytes, spec: ModelSpec, x: np.ndarray) -> Parity:
    """Max abs difference between PyTorch and onnxruntime on held-out rows."""
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = run_onnx(model, x, spec.input_name)
    if got.shape != expected.shape:
        return Parity(max_abs_error=float("inf"), rows=len(x))
    return Parity(max_abs_error=float(np.abs(got - expected).max()), rows=len(x))
