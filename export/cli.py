"""`python -m export`: build, list and validate versions in the model repository."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from export.errors import ExportError, UsageError

DEFAULT_REPOSITORY = "model_repository"


@dataclass(frozen=True)
class Args:
    command: str
    repository: Path
    model: str | None = None
    version: int | None = None
    arch: str | None = None
    seed: int = 0
    epochs: int | None = None
    policy: str | None = None
    instance_kind: str = "auto"
    instances: int = 1
    quiet: bool = False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, our exit code, no usage dump
        raise UsageError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    from export.config import INSTANCE_KINDS

    parser = _Parser(prog="python -m export", description=__doc__)
    parser.add_argument("--repository", type=Path,
                        default=Path(os.environ.get("MODEL_REPOSITORY", DEFAULT_REPOSITORY)),
                        help="model repository folder (default: $MODEL_REPOSITORY or ./model_repository)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    build = sub.add_parser("build", help="train, export and write a new numeric version")
    build.add_argument("model", help="model name (sentiment, digits)")
    build.add_argument("--version", type=int, help="version number (default: the next free one)")
    build.add_argument("--arch", help="architecture (default: the model's best)")
    build.add_argument("--seed", type=int, default=0, help="random seed for data split and training")
    build.add_argument("--epochs", type=int, help="override the number of training epochs")
    build.add_argument("--version-policy", dest="policy",
                       help="Triton version policy: all | latest:N | specific:1,2 (default: keep, else all)")
    build.add_argument("--instance-kind", choices=INSTANCE_KINDS, default="auto",
                       help="instance group kind: auto (GPU if present), cpu or gpu")
    build.add_argument("--instances", type=int, default=1, help="model instances per device")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    lst = sub.add_parser("list", help="versions and their metadata, as a table")
    lst.add_argument("model", nargs="?")
    sub.add_parser("validate", help="check every config and model file")
    return parser


def parse_args(argv: Sequence[str]) -> Args:
    ns = vars(_parser().parse_args(list(argv)))
    return Args(**{k: v for k, v in ns.items() if k in Args.__dataclass_fields__})


def _progress(quiet: bool):
    def emit(line: str) -> None:
        if not quiet:
            print(f"  {line}", file=sys.stderr, flush=True)
    return emit


def cmd_build(args: Args) -> int:
    from export.build import BuildRequest, build

    logging.getLogger("torch").setLevel(logging.ERROR)
    result = build(BuildRequest(
        model=args.model or "", repository=args.repository, version=args.version, arch=args.arch,
        seed=args.seed, epochs=args.epochs, policy=args.policy, instance_kind=args.instance_kind,
        instances=args.instances,
    ), _progress(args.quiet))
    print(f"wrote {result.model} v{result.version} ({result.arch}) -> {result.path}: "
          f"accuracy {result.accuracy:.4f}, parity error {result.parity_error:.2e}, "
          f"trained in {result.seconds:.1f}s")
    return 0


def _sci(value) -> str:
    return f"{value:.1e}" if isinstance(value, (int, float)) else "-"


def cmd_list(args: Args) -> int:
    from export.build import resolve_spec
    from export.repository import list_versions

    if args.model and not (args.repository / args.model).is_dir():
        resolve_spec(args.model)  # unknown name -> the clear error
        raise ExportError(f"no versions of {args.model} in {args.repository}")
    rows = [("MODEL", "VERSION", "ARCH", "ACCURACY", "PARITY", "CREATED", "SHA256", "COMMIT")]
    for v in list_versions(args.repository, args.model):
        rows.append((v.model, str(v.version), v.field("architecture"), v.field("accuracy"),
                     _sci(v.metadata.get("parity_max_abs_error")), v.field("created"), v.field("sha256")[:12],
                     v.field("source_commit")[:12]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"{len(rows) - 1} version(s)")
    return 0


def cmd_validate(args: Args) -> int:
    from export.validate import validate

    models, versions, problems = validate(args.repository)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {args.repository}", file=sys.stderr)
        return 1
    print(f"ok: {models} model(s), {versions} version(s) in {args.repository}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        return {"build": cmd_build, "list": cmd_list, "validate": cmd_validate}[args.command](args)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
