"""`build`: get a servable PyTorch module (a built-in example, trained here, or
`--from SOURCE`), export it, check parity, write a version."""

from __future__ import annotations

import platform
import re
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from export import config as cfg
from export.constants import INSTANCE_KINDS, IR_VERSION, OPSET
from export.errors import ExportError
from export.repository import check_writable, next_version, write_version
from export.specs import resolve_spec, spec_names

if TYPE_CHECKING:
    from export.servable import Checked
    from export.training import Progress

PARITY_ROWS = 512
DEFAULT_SEED = 0
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
# metadata.json keys every version has; a servable's metrics may not reuse them
_RESERVED = {"model", "version", "architecture", "created", "description", "source", "seed", "sha256",
             "parity_max_abs_error", "parity_rows", "source_commit", "onnx_opset", "onnx_ir_version",
             "torch", "onnx", "python"}


@dataclass(frozen=True)
class BuildRequest:
    model: str
    repository: Path
    version: int | None = None
    arch: str | None = None
    seed: int = DEFAULT_SEED
    epochs: int | None = None
    policy: str | None = None  # None: keep the existing config's policy, else "all"
    instance_kind: str = "auto"
    instances: int = 1
    source: str | None = None  # --from: a factory or a .pt2 program instead of a built-in example
    atol: float | None = None  # parity tolerance for every output, instead of the per-dtype default


@dataclass(frozen=True)
class BuildResult:
    model: str
    version: int
    arch: str
    path: Path
    accuracy: float | None
    parity_error: float
    seconds: float
    trained: bool = True


def source_commit() -> str:
    """The commit of the export code, with `+dirty` when it has local edits."""
    here = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "export"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _plan(req: BuildRequest) -> tuple[int, cfg.VersionPolicy]:
    """Everything that can be refused is refused here, before any training or import."""
    if req.source is not None:
        from export.sources import check_form

        if not _NAME.match(req.model):
            raise ExportError(f"bad model name {req.model!r}: use letters, digits, '_', '-' and '.'")
        if req.arch is not None or req.epochs is not None:
            raise ExportError("--arch and --epochs apply to the built-in examples, not to --from")
        check_form(req.source)
    elif req.model not in spec_names():
        raise ExportError(f"unknown model {req.model!r}; known models: {', '.join(spec_names())}; "
                          f"export your own with --from FILE.py:FACTORY or --from MODEL.pt2")
    else:
        spec = resolve_spec(req.model)
        arch = req.arch or spec.default_arch
        if arch not in spec.architectures:
            raise ExportError(f"unknown architecture {arch!r} for {spec.name}; choose from: {', '.join(spec.architectures)}")
    if req.atol is not None and not req.atol >= 0:
        raise ExportError(f"--atol must be a number >= 0, got {req.atol}")
    if req.version is not None and req.version < 1:
        raise ExportError(f"version must be a positive integer, got {req.version}")
    if req.instance_kind not in INSTANCE_KINDS:
        raise ExportError(f"unknown instance kind {req.instance_kind!r}; choose from: {', '.join(INSTANCE_KINDS)}")
    if req.instances < 1:
        raise ExportError(f"instances must be at least 1, got {req.instances}")
    check_writable(req.repository)
    model_dir = req.repository / req.model
    version = req.version if req.version is not None else next_version(model_dir)
    if (model_dir / str(version)).exists():
        raise ExportError(f"{req.model} version {version} already exists at {model_dir / str(version)}; versions are immutable")
    existing = cfg.read_config(model_dir)
    if req.policy is not None:
        policy = cfg.VersionPolicy.parse(req.policy)
    elif existing is not None:
        policy = cfg.VersionPolicy.of(existing)
    else:
        policy = cfg.VersionPolicy("all")
    return version, policy


def write_servable(req: BuildRequest, version: int, policy: cfg.VersionPolicy, servable: Checked,
                   progress: Progress, metadata: dict) -> tuple[Path, float]:
    """Export, check parity, and write `req.model` version `version`.
    Returns the version folder and the parity error."""
    import onnx
    import torch

    from export import parity
    from export.graph import to_onnx_bytes
    from export.repository import numeric_versions
    from export.signature import config_from_graph, label_files, same_signature

    name = f"{req.model} v{version}"
    clash = sorted(set(servable.metrics) & (_RESERVED | set(metadata)))
    if clash:
        raise ExportError(f"metrics may not be named {', '.join(clash)}: metadata.json uses those names")
    axes = "".join(f", {k} axes {list(v)}" for k, v in servable.dynamic_axes.items())
    progress(f"{name}: exporting to ONNX (opset {OPSET}, dynamic batch axis{axes})")
    parity.eager(servable, servable.inputs)  # a module that cannot run or returns the wrong things fails here
    model_bytes = to_onnx_bytes(servable)
    config = config_from_graph(req.model, onnx.load_from_string(model_bytes), policy, servable.labels,
                               servable.parameters, req.instance_kind, req.instances)
    existing = cfg.read_config(req.repository / req.model)
    if existing is not None and numeric_versions(req.repository / req.model):
        why = same_signature(existing, config)
        if why:
            raise ExportError(f"{name} cannot be served beside the existing versions: {why}; "
                              f"build it under another model name")
    result = parity.check(servable, model_bytes, name, req.seed, req.atol)
    progress(f"{name}: parity ok, max abs error {result.max_abs_error:.2e} over {result.rows} example and "
             f"{result.rows} random rows")
    metadata = {
        "model": req.model,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **({"description": servable.description} if servable.description else {}),
        **metadata,
        **servable.metrics,
        "parity_max_abs_error": result.max_abs_error,
        "parity_rows": result.rows,
        "source_commit": source_commit(),
        "onnx_opset": OPSET,
        "onnx_ir_version": IR_VERSION,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
    }
    files = label_files(servable.labels)
    labels = {files[out]: names for out, names in servable.labels.items()}
    path = write_version(req.repository / req.model, version, model_bytes, metadata, config, labels)
    return path, result.max_abs_error


def _build_example(req: BuildRequest, version: int, policy: cfg.VersionPolicy, progress: Progress) -> BuildResult:
    import torch

    from export.servable import Servable, checked
    from export.training import train

    spec = resolve_spec(req.model)
    arch = req.arch or spec.default_arch
    progress(f"{spec.name} v{version}: loading data (seed {req.seed})")
    data = spec.load_data(req.seed)
    progress(f"{spec.name} v{version}: training {arch} on {len(data.x_train)} examples")
    trained = train(spec, arch, data, req.seed, progress, epochs=req.epochs)
    progress(f"{spec.name} v{version}: held-out accuracy {trained.accuracy:.4f} "
             f"({len(data.x_test)} examples, {trained.seconds:.1f}s)")
    servable = Servable(
        module=trained.module,
        example_inputs={spec.input_name: torch.from_numpy(data.x_test[:PARITY_ROWS])},
        output_names=[spec.output_name],
        labels=spec.labels,
        parameters={**spec.parameters, "labels": ",".join(spec.labels)},
        metrics={"accuracy": round(trained.accuracy, 6), "train_accuracy": round(trained.train_accuracy, 6),
                 "held_out_examples": len(data.x_test)},
    )
    metadata = {"architecture": arch, "training_data": data.description, "seed": req.seed,
                "epochs": req.epochs if req.epochs is not None else spec.plans[arch].epochs}
    path, error = write_servable(req, version, policy, checked(servable, spec.name), progress, metadata)
    return BuildResult(spec.name, version, arch, path, trained.accuracy, error, trained.seconds)


def _build_from(req: BuildRequest, version: int, policy: cfg.VersionPolicy, progress: Progress) -> BuildResult:
    from export.sources import load_source

    started = time.perf_counter()
    progress(f"{req.model} v{version}: loading {req.source}")
    servable = load_source(req.source)
    module = servable.module
    arch = "ExportedProgram" if hasattr(module, "graph_signature") else type(module).__name__
    metadata = {"architecture": arch, "source": req.source, "seed": req.seed}
    path, error = write_servable(req, version, policy, servable, progress, metadata)
    accuracy = servable.metrics.get("accuracy")
    return BuildResult(req.model, version, arch, path, accuracy, error, time.perf_counter() - started, trained=False)


def build(req: BuildRequest, progress: Progress) -> BuildResult:
    version, policy = _plan(req)
    if req.source is not None:
        return _build_from(req, version, policy, progress)
    return _build_example(req, version, policy, progress)
