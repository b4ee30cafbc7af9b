"""A checked Servable -> ONNX bytes with a dynamic batch axis and the user's names.

The exporter names internal values after the ops that make them, so a
user's name ("embedding") can collide with one of them. The graph is
therefore exported with reserved names for its inputs and outputs, and
renamed afterwards; any internal value already called like a final name is
renamed out of the way first.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import nn

from export.constants import IR_VERSION, OPSET
from export.errors import ExportError
from export.servable import Checked

_IN, _OUT = "__export_input_{}", "__export_output_{}"


class Positional(nn.Module):
    """Calls the user's module with the inputs in order and returns a tuple
    of tensors in `output_names` order."""

    def __init__(self, inner: nn.Module, output_names: tuple[str, ...]) -> None:
        super().__init__()
        self.inner = inner
        self.output_names = output_names

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.inner(*args)
        if isinstance(out, dict):
            return tuple(out[name] for name in self.output_names)
        if isinstance(out, torch.Tensor):
            return (out,)
        return tuple(out)


def dynamic_shapes(servable: Checked) -> tuple[dict, ...]:
    """One `torch.export.Dim` for every batch axis, and one per distinct example
    size among the extra dynamic axes (a sequence axis shared by two inputs)."""
    batch = torch.export.Dim("batch", min=1)
    by_size: dict[int, object] = {}
    shapes = []
    for name, tensor in servable.inputs.items():
        axes = {0: batch}
        for axis in servable.dynamic_axes.get(name, ()):
            size = tensor.shape[axis]
            axes[axis] = by_size.setdefault(size, torch.export.Dim(f"dim{len(by_size)}", min=1))
        shapes.append(axes)
    return tuple(shapes)


def _names_in(graph, into: set[str]) -> set[str]:
    into.update(i.name for i in graph.input)
    into.update(o.name for o in graph.output)
    into.update(i.name for i in graph.initializer)
    into.update(s.values.name for s in graph.sparse_initializer)
    into.update(v.name for v in graph.value_info)
    for node in graph.node:
        into.update(node.input)
        into.update(node.output)
        for sub in _subgraphs(node):
            _names_in(sub, into)
    into.discard("")
    return into


def _subgraphs(node):
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def _apply(graph, mapping: dict[str, str]) -> None:
    for seq in (graph.input, graph.output, graph.value_info, graph.initializer):
        for item in seq:
            item.name = mapping.get(item.name, item.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = mapping.get(sparse.values.name, sparse.values.name)
    for node in graph.node:
        node.input[:] = [mapping.get(n, n) for n in node.input]
        node.output[:] = [mapping.get(n, n) for n in node.output]
        for sub in _subgraphs(node):
            _apply(sub, mapping)


def rename_values(graph, wanted: dict[str, str]) -> None:
    """Rename the values `wanted` names, after moving aside internal values
    that already carry one of the new names."""
    used = _names_in(graph, set())
    targets = set(wanted.values())
    taken = used | targets
    mapping = dict(wanted)
    for name in sorted(used & targets - set(wanted)):
        n = 1
        while f"{name}__{n}" in taken:
            n += 1
        mapping[name] = f"{name}__{n}"
        taken.add(mapping[name])
    _apply(graph, mapping)


def to_onnx_bytes(servable: Checked) -> bytes:
    import onnx

    inputs = list(servable.inputs)
    outputs = list(servable.output_names)
    safe_in = [_IN.format(i) for i in range(len(inputs))]
    safe_out = [_OUT.format(i) for i in range(len(outputs))]
    args = tuple(servable.inputs.values())
    if isinstance(servable.module, nn.Module):
        target, shapes = Positional(servable.module.eval(), servable.output_names), (dynamic_shapes(servable),)
    else:  # a torch.export program carries its own dynamic shapes
        target, shapes = servable.module, None
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(target, args, input_names=safe_in, output_names=safe_out,
                                        dynamic_shapes=shapes, opset_version=OPSET, dynamo=True, verbose=False)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {first}") from None
    proto = program.model_proto
    got_in = [i.name for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    got_out = [o.name for o in proto.graph.output]
    if got_in != safe_in or got_out != safe_out:
        raise ExportError(f"the exported graph has {len(got_in)} input(s) and {len(got_out)} output(s); "
                          f"expected {len(inputs)} ({', '.join(inputs)}) and {len(outputs)} ({', '.join(outputs)})")
    rename_values(proto.graph, {**dict(zip(safe_in, inputs)), **dict(zip(safe_out, outputs))})
    proto.ir_version = IR_VERSION
    proto.producer_name = "export"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"the exported ONNX graph does not check: {type(exc).__name__}: {exc}") from None
    buffer = io.BytesIO()
    onnx.save_model(proto, buffer)
    return buffer.getvalue()
