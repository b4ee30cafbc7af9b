"""`build`: train a spec's architecture, export it, check parity, write a version."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from export import config as cfg
from export.constants import INSTANCE_KINDS, IR_VERSION, OPSET
from export.errors import ExportError
from export.repository import check_writable, next_version, write_version
from export.specs import ModelSpec, resolve_spec

if TYPE_CHECKING:
    from export.training import Progress

PARITY_ROWS = 512
DEFAULT_SEED = 0


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


@dataclass(frozen=True)
class BuildResult:
    model: str
    version: int
    arch: str
    path: Path
    accuracy: float
    parity_error: float
    seconds: float


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


def _plan(req: BuildRequest, spec: ModelSpec) -> tuple[str, int, cfg.VersionPolicy]:
    """Everything that can be refused is refused here, before any training."""
    arch = req.arch or spec.default_arch
    if arch not in spec.architectures:
        raise ExportError(f"unknown architecture {arch!r} for {spec.name}; choose from: {', '.join(spec.architectures)}")
    if req.version is not None and req.version < 1:
        raise ExportError(f"version must be a positive integer, got {req.version}")
    if req.instance_kind not in INSTANCE_KINDS:
        raise ExportError(f"unknown instance kind {req.instance_kind!r}; choose from: {', '.join(INSTANCE_KINDS)}")
    if req.instances < 1:
        raise ExportError(f"instances must be at least 1, got {req.instances}")
    check_writable(req.repository)
    model_dir = req.repository / spec.name
    version = req.version if req.version is not None else next_version(model_dir)
    if (model_dir / str(version)).exists():
        raise ExportError(f"{spec.name} version {version} already exists at {model_dir / str(version)}; versions are immutable")
    existing = cfg.read_config(model_dir)
    if req.policy is not None:
        policy = cfg.VersionPolicy.parse(req.policy)
    elif existing is not None:
        policy = cfg.VersionPolicy.of(existing)
    else:
        policy = cfg.VersionPolicy("all")
    return arch, version, policy


def build(req: BuildRequest, progress: Progress) -> BuildResult:
    from export.onnx_io import PARITY_TOLERANCE, check_parity, to_onnx
    from export.training import train

    spec = resolve_spec(req.model)
    arch, version, policy = _plan(req, spec)
    progress(f"{spec.name} v{version}: loading data (seed {req.seed})")
    data = spec.load_data(req.seed)
    progress(f"{spec.name} v{version}: training {arch} on {len(data.x_train)} examples")
    trained = train(spec, arch, data, req.seed, progress, epochs=req.epochs)
    progress(f"{spec.name} v{version}: held-out accuracy {trained.accuracy:.4f} "
             f"({len(data.x_test)} examples, {trained.seconds:.1f}s)")
    progress(f"{spec.name} v{version}: exporting to ONNX (opset {OPSET}, dynamic batch axis)")
    model_bytes = to_onnx(trained.module, spec, data.x_test)
    parity = check_parity(trained.module, model_bytes, spec, data.x_test[:PARITY_ROWS])
    if not parity.ok:
        raise ExportError(f"parity check failed for {spec.name} v{version}: max abs error "
                          f"{parity.max_abs_error:.3g} > {PARITY_TOLERANCE:g} over {parity.rows} rows; nothing written")
    progress(f"{spec.name} v{version}: parity ok, max abs error {parity.max_abs_error:.2e} over {parity.rows} rows")
    import onnx
    import torch

    metadata = {
        "model": spec.name,
        "version": version,
        "architecture": arch,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "accuracy": round(trained.accuracy, 6),
        "train_accuracy": round(trained.train_accuracy, 6),
        "held_out_examples": len(data.x_test),
        "training_data": data.description,
        "seed": req.seed,
        "epochs": req.epochs if req.epochs is not None else spec.plans[arch].epochs,
        "parity_max_abs_error": parity.max_abs_error,
        "parity_rows": parity.rows,
        "source_commit": source_commit(),
        "onnx_opset": OPSET,
        "onnx_ir_version": IR_VERSION,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
    }
    config = cfg.build_config(spec, policy, req.instance_kind, req.instances)
    path = write_version(req.repository / spec.name, version, model_bytes, metadata, config, spec.labels)
    return BuildResult(spec.name, version, arch, path, trained.accuracy, parity.max_abs_error, trained.seconds)
