"""PyTorch vs onnxruntime on the examples and on seeded random inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from export.errors import ExportError
from export.servable import SUPPORTED_DTYPES, Checked, dtype_name

# Largest accepted max abs difference per output dtype; integers and booleans must match exactly.
TOLERANCE = {"float32": 1e-4, "float16": 1e-2}


@dataclass(frozen=True)
class Parity:
    max_abs_error: float  # over every float output and both input sets
    rows: int  # rows compared per input set
    sets: int  # input sets compared


def eager(servable: Checked, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """The module's outputs as numpy arrays, in `output_names` order."""
    module = servable.module
    call = module.module() if hasattr(module, "graph_signature") else module.eval()
    try:
        with torch.no_grad():
            out = call(*inputs.values())
    except Exception as exc:
        raise ExportError(f"the module failed on the example inputs: {type(exc).__name__}: {exc}") from None
    names = servable.output_names
    if isinstance(out, dict):
        missing = [n for n in names if n not in out]
        if missing:
            raise ExportError(f"the module's output dict lacks {', '.join(missing)} (it has {', '.join(map(str, out))})")
        out = [out[n] for n in names]
    elif isinstance(out, torch.Tensor):
        out = [out]
    else:
        out = list(out)
    if len(out) != len(names):
        raise ExportError(f"the module returned {len(out)} output(s) but output_names lists {len(names)}: {', '.join(names)}")
    arrays = []
    for name, value in zip(names, out):
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"output {name!r} is {type(value).__name__}, not a tensor")
        if dtype_name(value.dtype) not in SUPPORTED_DTYPES:
            raise ExportError(f"output {name!r} is {dtype_name(value.dtype)}; supported dtypes: {', '.join(SUPPORTED_DTYPES)}")
        if value.dim() < 1 or value.shape[0] != servable.batch:
            raise ExportError(f"output {name!r} has shape {list(value.shape)}; its first axis must be the batch "
                              f"({servable.batch} rows for these examples)")
        arrays.append(value.detach().cpu().numpy())
    return arrays


def random_like(inputs: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Same shapes and dtypes, drawn uniformly within each example's range of
    values, so an index input stays a valid index."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, tensor in inputs.items():
        x = tensor.numpy()
        if x.dtype == np.bool_:
            drawn = rng.integers(0, 2, size=x.shape).astype(np.bool_)
        elif np.issubdtype(x.dtype, np.integer):
            drawn = rng.integers(int(x.min()), int(x.max()), size=x.shape, endpoint=True).astype(x.dtype)
        else:
            lo, hi = float(x.min()), float(x.max())
            drawn = rng.uniform(lo, hi, size=x.shape).astype(x.dtype)
        out[name] = torch.from_numpy(drawn)
    return out


def _max_error(got: np.ndarray, expected: np.ndarray) -> float:
    if got.shape != expected.shape or got.dtype != expected.dtype:
        return float("inf")
    if got.dtype == np.bool_ or np.issubdtype(got.dtype, np.integer):
        return float(np.abs(got.astype(np.int64) - expected.astype(np.int64)).max(initial=0))
    a, b = got.astype(np.float64), expected.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return float(np.where(same, 0.0, np.abs(a - b)).max(initial=0.0))


def check(servable: Checked, model: bytes, name: str, seed: int, atol: float | None) -> Parity:
    """Raise on the first output that differs by more than its tolerance."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    worst = 0.0
    sets = (("example", servable.inputs), ("random", random_like(servable.inputs, seed)))
    for which, inputs in sets:
        expected = eager(servable, inputs)
        feed = {k: v.numpy() for k, v in inputs.items()}
        try:
            got = session.run(list(servable.output_names), feed)
        except Exception as exc:
            raise ExportError(f"onnxruntime failed on the {which} inputs: {type(exc).__name__}: {exc}") from None
        for out, g, e in zip(servable.output_names, got, expected):
            error = _max_error(g, e)
            tol = atol if atol is not None else TOLERANCE.get(str(e.dtype), 0.0)
            if not error <= tol:
                detail = (f"{g.dtype}{list(g.shape)} from onnxruntime vs {e.dtype}{list(e.shape)} from PyTorch"
                          if error == float("inf") else f"max abs error {error:.3g} > {tol:g}")
                raise ExportError(f"parity check failed for {name}: output {out!r}, {detail} on the {which} "
                                  f"inputs ({servable.batch} rows); nothing written")
            if np.issubdtype(e.dtype, np.floating):
                worst = max(worst, error)
    return Parity(worst, servable.batch, len(sets))
