"""`validate`: every config parses with the schema and matches its ONNX files."""

from __future__ import annotations

from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from export.config import read_config
from export.constants import CONFIG_NAME, IR_VERSION, MAX_OPSET, METADATA_FILE, MODEL_FILE, PLATFORM
from export.errors import ExportError
from export.repository import read_labels, read_metadata, sha256_file
from export.signature import ONNX_TO_TRITON as _ONNX_TO_TRITON



def _dims(value_info) -> list[int]:
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value_info.type.tensor_type.shape.dim]


def _check_tensors(where: str, kind: str, declared, actual, batched: bool) -> list[str]:
    problems = []
    by_name = {t.name: t for t in actual}
    if sorted(by_name) != sorted(t.name for t in declared):
        return [f"{where}: {kind}s in model.onnx {sorted(by_name)} do not match config {sorted(t.name for t in declared)}"]
    for t in declared:
        onnx_t = by_name[t.name]
        dtype = _ONNX_TO_TRITON.get(onnx_t.type.tensor_type.elem_type)
        if dtype != t.data_type:
            problems.append(f"{where}: {kind} {t.name!r} is {mc.DataType.Name(dtype) if dtype else 'unsupported'} "
                            f"in model.onnx but {mc.DataType.Name(t.data_type)} in config")
        dims = _dims(onnx_t)
        expected = ([-1] if batched else []) + list(t.dims)
        if len(dims) != len(expected) or any(e != -1 and d != e for d, e in zip(dims, expected)):
            problems.append(f"{where}: {kind} {t.name!r} has shape {dims} in model.onnx but config declares {expected}")
        elif batched and dims[0] != -1:
            problems.append(f"{where}: {kind} {t.name!r} has a fixed batch axis {dims[0]}; max_batch_size needs it dynamic")
    return problems


def _check_version(model_dir: Path, version_dir: Path, config: mc.ModelConfig) -> list[str]:
    import onnx

    where = f"{model_dir.name}/{version_dir.name}"
    path = version_dir / (config.default_model_filename or MODEL_FILE)
    if not path.is_file():
        return [f"{where}: {path.name} is missing"]
    problems = []
    metadata = read_metadata(version_dir)
    if not metadata:
        problems.append(f"{where}: {METADATA_FILE} is missing or not JSON")
    elif metadata.get("sha256") != sha256_file(path):
        problems.append(f"{where}: {path.name} does not match the sha256 in {METADATA_FILE}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises several unrelated types for a bad file
        return problems + [f"{where}: {path.name} is not a readable ONNX model ({exc.__class__.__name__})"]
    if model.ir_version > IR_VERSION:
        problems.append(f"{where}: ONNX IR version {model.ir_version} is newer than {IR_VERSION}, which Triton 24.10 reads")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset > MAX_OPSET:
        problems.append(f"{where}: opset {opset} is newer than {MAX_OPSET}, which Triton 24.10 runs")
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    batched = config.max_batch_size > 0
    problems += _check_tensors(where, "input", config.input, inputs, batched)
    problems += _check_tensors(where, "output", config.output, model.graph.output, batched)
    return problems


def check_model(model_dir: Path) -> list[str]:
    name = model_dir.name
    try:
        config = read_config(model_dir)
    except ExportError as exc:
        return [str(exc)]
    if config is None:
        return [f"{name}: {CONFIG_NAME} is missing"]
    problems = []
    if config.name and config.name != name:
        problems.append(f"{name}: config name {config.name!r} does not match its folder")
    if config.platform != PLATFORM and config.backend != "onnxruntime":
        problems.append(f"{name}: platform {config.platform or config.backend!r} is not {PLATFORM!r}")
    for out in config.output:
        if out.label_filename:
            labels_path = model_dir / out.label_filename
            if not labels_path.is_file():
                problems.append(f"{name}: label file {out.label_filename} is missing")
            else:
                count = len(read_labels(labels_path))
                if list(out.dims) != [count]:
                    problems.append(f"{name}: {out.label_filename} has {count} labels but output {out.name!r} has dims {list(out.dims)}")
    versions = []
    for child in sorted(model_dir.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if not child.name.isdigit() or child.name != str(int(child.name)) or int(child.name) < 1:
                problems.append(f"{name}: version folder {child.name!r} is not a positive integer")
            else:
                versions.append(child)
    if not versions:
        problems.append(f"{name}: no numeric version folders")
    for version_dir in sorted(versions, key=lambda p: int(p.name)):
        problems += _check_version(model_dir, version_dir, config)
    return problems


def validate(repo: Path) -> tuple[int, int, list[str]]:
    """(models, versions, problems) for the whole repository."""
    if not repo.is_dir():
        return 0, 0, [f"model repository {repo} does not exist"]
    models = sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith("."))
    problems: list[str] = []
    versions = 0
    for model_dir in models:
        problems += check_model(model_dir)
        versions += sum(1 for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not models:
        problems.append(f"model repository {repo} holds no models")
    return len(models), versions, problems
