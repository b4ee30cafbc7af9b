"""`config.pbtxt` from an ONNX graph's own signature: every input and output,
its Triton data type and its dims (-1 where dynamic, batch axis left out)."""

from __future__ import annotations

from dataclasses import dataclass

from tritonclient.grpc import model_config_pb2 as mc

from export.config import MAX_QUEUE_DELAY_US, PREFERRED_BATCH_SIZES, VersionPolicy
from export.constants import LABELS_NAME, MAX_BATCH_SIZE, PLATFORM
from export.errors import ExportError

# ONNX TensorProto element types -> Triton data types.
ONNX_TO_TRITON = {
    1: mc.TYPE_FP32, 2: mc.TYPE_UINT8, 3: mc.TYPE_INT8, 4: mc.TYPE_UINT16, 5: mc.TYPE_INT16,
    6: mc.TYPE_INT32, 7: mc.TYPE_INT64, 9: mc.TYPE_BOOL, 10: mc.TYPE_FP16, 11: mc.TYPE_FP64,
    12: mc.TYPE_UINT32, 13: mc.TYPE_UINT64, 16: mc.TYPE_BF16,
}


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: int  # mc.DataType
    dims: tuple[int, ...]  # batch axis included, -1 where dynamic


def tensors(values) -> list[Tensor]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dtype = ONNX_TO_TRITON.get(t.elem_type)
        if dtype is None:
            raise ExportError(f"{v.name!r} has ONNX element type {t.elem_type}, which Triton cannot serve")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        out.append(Tensor(v.name, dtype, dims))
    return out


def signature(model) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of an onnx.ModelProto, initializers left out."""
    initializers = {i.name for i in model.graph.initializer}
    return tensors(i for i in model.graph.input if i.name not in initializers), tensors(model.graph.output)


def label_files(labels: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """Output name -> label file: `labels.txt` for a single labelled output,
    `<output>_labels.txt` for each when several have labels."""
    if len(labels) == 1:
        return {next(iter(labels)): LABELS_NAME}
    return {name: f"{name}_labels.txt" for name in labels}


def config_from_graph(name: str, model, policy: VersionPolicy, labels: dict[str, tuple[str, ...]],
                      parameters: dict[str, str], instance_kind: str = "auto", instances: int = 1) -> mc.ModelConfig:
    inputs, outputs = signature(model)
    for t in (*inputs, *outputs):
        if not t.dims or t.dims[0] != -1:
            raise ExportError(f"{t.name!r} has shape {list(t.dims)} in the ONNX graph; its batch axis must be dynamic")
    files = label_files(labels)
    config = mc.ModelConfig(name=name, platform=PLATFORM, max_batch_size=MAX_BATCH_SIZE)
    for t in inputs:
        config.input.add(name=t.name, data_type=t.data_type).dims.extend(t.dims[1:])
    for t in outputs:
        out = config.output.add(name=t.name, data_type=t.data_type, label_filename=files.get(t.name, ""))
        out.dims.extend(t.dims[1:])
        if t.name in labels and list(t.dims[1:]) != [len(labels[t.name])]:
            raise ExportError(f"output {t.name!r} has shape {list(t.dims)} but {len(labels[t.name])} labels; "
                              f"a labelled output must be [batch, {len(labels[t.name])}]")
    config.dynamic_batching.preferred_batch_size.extend(PREFERRED_BATCH_SIZES)
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    policy.apply(config)
    kind = mc.ModelInstanceGroup.Kind.Value(f"KIND_{instance_kind.upper()}")
    config.instance_group.add(name=name, count=instances, kind=kind)
    for key, value in sorted(parameters.items()):
        config.parameters[key].string_value = value
    return config


def same_signature(old: mc.ModelConfig, new: mc.ModelConfig) -> str | None:
    """Why versions served under `old` could not be served under `new`, or None."""
    def sig(config):
        return ({t.name: (t.data_type, list(t.dims)) for t in config.input},
                {t.name: (t.data_type, list(t.dims)) for t in config.output})

    (old_in, old_out), (new_in, new_out) = sig(old), sig(new)
    for kind, a, b in (("inputs", old_in, new_in), ("outputs", old_out, new_out)):
        if a != b:
            def show(d):
                return ", ".join(f"{k} {mc.DataType.Name(t)[5:]} {dims}" for k, (t, dims) in sorted(d.items()))
            return f"{kind} differ: existing versions have {show(a)}; this one has {show(b)}"
    if old.max_batch_size != new.max_batch_size:
        return f"max_batch_size differs: {old.max_batch_size} vs {new.max_batch_size}"
    return None
