"""`Servable`: what a factory hands to `python -m export build NAME --from SOURCE`.

Importing this module imports neither torch nor numpy; `checked` does, when
a build asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from export.errors import ExportError

if TYPE_CHECKING:
    import torch

# torch dtype name -> what it is called in errors; every one maps to a Triton type.
SUPPORTED_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32")


@dataclass
class Servable:
    """A PyTorch module and what Triton needs to know to serve it.

    - `module`: called as `module(*example_inputs.values())`, positionally in
      the dict's order; returns one tensor, a tuple/list of tensors in
      `output_names` order, or a dict keyed by output name.
    - `example_inputs`: input name -> tensor (or numpy array), batch axis
      first, at least 2 rows; used to trace the graph and to check parity.
      Random parity inputs are drawn within each example's range of values.
    - `output_names`: the graph's output names, in order.
    - `labels`: output name -> class names (writes that output's label file,
      so Triton's classification extension works); a plain tuple when there
      is one output.
    - `dynamic_axes`: input name -> axes besides the batch axis (always
      dynamic) whose size may vary, e.g. a sequence axis.
    - `parameters`: strings written into config.pbtxt `parameters`.
    - `metrics`: numbers stored in the version's metadata.json (accuracy...).
    - `description`: one line stored in metadata.json.
    """

    module: "torch.nn.Module"
    example_inputs: "Mapping[str, Any]"
    output_names: "Sequence[str]"
    labels: "Mapping[str, Sequence[str]] | Sequence[str] | None" = None
    dynamic_axes: "Mapping[str, Sequence[int]]" = field(default_factory=dict)
    parameters: "Mapping[str, str]" = field(default_factory=dict)
    metrics: "Mapping[str, float]" = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Checked:
    """A Servable whose fields were checked, with inputs as CPU tensors."""

    module: Any
    inputs: dict  # name -> torch.Tensor
    output_names: tuple[str, ...]
    labels: dict  # output name -> tuple[str, ...]
    dynamic_axes: dict  # name -> tuple[int, ...], batch axis excluded
    parameters: dict
    metrics: dict
    description: str

    @property
    def batch(self) -> int:
        return next(iter(self.inputs.values())).shape[0]


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_name(kind: str, name) -> str:
    if not isinstance(name, str) or not name or not name.replace("_", "a").replace("-", "a").replace(".", "a").isalnum():
        raise ExportError(f"{kind} name {name!r} must be a non-empty string of letters, digits, '_', '-' or '.'")
    return name


def _labels(value, outputs: tuple[str, ...]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ExportError("labels must be a dict of output name -> class names, or a tuple of class names")
        if len(outputs) != 1:
            raise ExportError(f"labels as a plain tuple need exactly one output; this model has {len(outputs)}: "
                              f"give a dict of output name -> class names")
        value = {outputs[0]: value}
    out = {}
    for name, names in value.items():
        if name not in outputs:
            raise ExportError(f"labels given for {name!r}, which is not an output ({', '.join(outputs)})")
        names = tuple(names)
        if not names or not all(isinstance(n, str) and n.strip() and "\n" not in n for n in names):
            raise ExportError(f"labels of {name!r} must be non-empty one-line strings")
        out[name] = names
    return out


def checked(servable: object, where: str) -> Checked:
    """The Servable's fields, each checked; every problem is one ExportError line."""
    import numpy as np
    import torch

    if not isinstance(servable, Servable):
        raise ExportError(f"{where} returned {type(servable).__name__}, not export.Servable")
    if not isinstance(servable.module, torch.nn.Module):
        raise ExportError(f"{where}: module is {type(servable.module).__name__}, not a torch.nn.Module")
    if not isinstance(servable.example_inputs, Mapping) or not servable.example_inputs:
        raise ExportError(f"{where}: example_inputs must be a non-empty dict of input name -> tensor")
    inputs = {}
    for name, value in servable.example_inputs.items():
        _check_name("input", name)
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"{where}: example input {name!r} is {type(value).__name__}, not a tensor")
        if dtype_name(value.dtype) not in SUPPORTED_DTYPES:
            raise ExportError(f"input {name!r} is {dtype_name(value.dtype)}; supported dtypes: {', '.join(SUPPORTED_DTYPES)}")
        if value.dim() < 1 or value.shape[0] < 2:
            raise ExportError(f"example input {name!r} has shape {list(value.shape)}; it needs a batch axis "
                              f"first with at least 2 rows")
        inputs[name] = value.detach().cpu().contiguous()
    batches = {t.shape[0] for t in inputs.values()}
    if len(batches) != 1:
        raise ExportError(f"example inputs disagree on the batch size: {sorted(batches)}")
    names = servable.output_names
    if isinstance(names, str) or not isinstance(names, Sequence) or not names:
        raise ExportError(f"{where}: output_names must be a non-empty list of names")
    outputs = tuple(_check_name("output", n) for n in names)
    if len(set(outputs) | set(inputs)) != len(outputs) + len(inputs):
        raise ExportError(f"input and output names must all differ: {', '.join([*inputs, *outputs])}")
    axes = {}
    for name, extra in dict(servable.dynamic_axes or {}).items():
        if name not in inputs:
            raise ExportError(f"dynamic_axes names {name!r}, which is not an input ({', '.join(inputs)})")
        rank = inputs[name].dim()
        extra = tuple(sorted(set(int(a) for a in extra)))
        if any(a < 1 or a >= rank for a in extra):
            raise ExportError(f"dynamic_axes of {name!r} must be axes 1..{rank - 1} (the batch axis 0 is always dynamic)")
        if any(inputs[name].shape[a] < 2 for a in extra):
            raise ExportError(f"example input {name!r} needs at least 2 entries along each dynamic axis {list(extra)}")
        axes[name] = extra
    parameters = dict(servable.parameters or {})
    if not all(isinstance(k, str) and k and isinstance(v, str) for k, v in parameters.items()):
        raise ExportError(f"{where}: parameters must be a dict of str -> str")
    metrics = dict(servable.metrics or {})
    if not all(isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in metrics.items()):
        raise ExportError(f"{where}: metrics must be a dict of str -> number")
    if not isinstance(servable.description, str):
        raise ExportError(f"{where}: description must be a string")
    return Checked(servable.module, inputs, outputs, _labels(servable.labels, outputs), axes, parameters, metrics,
                   servable.description.strip())
