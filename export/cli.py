"""`python -m export`: build, list and validate versions in the model repository, and roll them out
through the router (promote, rollback, status)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from export import promote as rollouts
from export import rollout_args as arg_types
from export.constants import INSTANCE_KINDS
from export.errors import ExportError, UsageError

if TYPE_CHECKING:
    from export.build import BuildRequest

DEFAULT_REPOSITORY = "model_repository"


@dataclass(frozen=True)
class RepositoryArgs:
    """What `list` and `validate` look at."""

    repository: Path
    model: str | None = None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, our exit code, no usage dump
        raise UsageError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m export", description=__doc__)
    parser.add_argument("--repository", type=Path,
                        default=Path(os.environ.get("MODEL_REPOSITORY", DEFAULT_REPOSITORY)),
                        help="model repository folder (default: $MODEL_REPOSITORY or ./model_repository)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    # Options left out are left out of the namespace, so BuildRequest's defaults apply.
    build = sub.add_parser("build", help="train, export and write a new numeric version",
                           argument_default=argparse.SUPPRESS)
    build.add_argument("model", help="model name: a built-in example (sentiment, digits), or any name with --from")
    build.add_argument("--from", dest="source", metavar="SOURCE",
                       help="export your own model: path/to/file.py:factory or package.module:factory "
                            "(a callable returning export.Servable), or a torch.export program path/to/model.pt2")
    build.add_argument("--atol", type=float,
                       help="parity tolerance for every output (default: 1e-4 for FP32, 1e-2 for FP16, exact otherwise)")
    build.add_argument("--version", type=int, help="version number (default: the next free one)")
    build.add_argument("--arch", help="built-in examples: architecture (default: the model's best)")
    build.add_argument("--seed", type=int, help="random seed for data split and training, and for the random parity inputs")
    build.add_argument("--epochs", type=int, help="built-in examples: override the number of training epochs")
    build.add_argument("--version-policy", dest="policy",
                       help="Triton version policy: all | latest:N | specific:1,2 (default: keep, else all)")
    build.add_argument("--instance-kind", choices=INSTANCE_KINDS,
                       help="instance group kind: auto (GPU if present), cpu or gpu")
    build.add_argument("--instances", type=int, help="model instances per device")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    lst = sub.add_parser("list", help="versions and their metadata, as a table")
    lst.add_argument("model", nargs="?")
    sub.add_parser("validate", help="check every config and model file")
    _rollout_parsers(sub)
    return parser


def _rollout_parsers(sub) -> None:
    router = dict(metavar="URL", help="the router (default: $ROUTER_URL or http://localhost:8080); "
                                      "the admin key comes from $ROUTER_API_KEY")
    promote = sub.add_parser("promote", argument_default=argparse.SUPPRESS,
                             help="load a version in Triton, then roll it out step by step through the router",
                             description="Exit 0 when promoted, 3 when rolled back (or refused by the shadow "
                                         "check), 4 when paused, 1 on errors.")
    promote.add_argument("model")
    promote.add_argument("version", type=arg_types.version_arg, help="3 or v3")
    promote.add_argument("--steps", metavar="PERCENTS", type=arg_types.steps_arg,
                         help="canary percents, comma-separated and rising, at most 20 (router default: 5,25,50,100)")
    promote.add_argument("--interval", metavar="SECONDS", type=arg_types.interval_arg,
                         help="seconds per step, 0.1-86400 (router default: 30)")
    promote.add_argument("--min-requests", metavar="N", type=arg_types.requests_arg,
                         help="canary requests a step needs (router default: 100)")
    promote.add_argument("--max-error-rate", metavar="RATE", type=arg_types.fraction_arg,
                         help="canary error rate, 0-1 (router default: 0.01)")
    promote.add_argument("--max-p99-ratio", metavar="RATIO", type=arg_types.p99_ratio_arg,
                         help="canary p99 / default p99, 1-1000 (router default: 1.5)")
    promote.add_argument("--min-agreement", metavar="FRACTION", type=arg_types.fraction_arg,
                         help="shadow agreement, 0-1: checked after --shadow, and by the router at each step")
    promote.add_argument("--shadow", metavar="SECONDS", type=arg_types.seconds_arg,
                         help="mirror every request to the version this long before the first step")
    promote.add_argument("--router", **router)
    promote.add_argument("--triton", metavar="URL",
                         help="Triton's HTTP address (default: $TRITON_HTTP_URL or http://localhost:8000)")
    promote.add_argument("--no-wait", action="store_true", help="start the rollout and exit")
    rollback = sub.add_parser("rollback", argument_default=argparse.SUPPRESS,
                              help="stop a model's rollout: all traffic back to its default version")
    rollback.add_argument("model")
    rollback.add_argument("--router", **router)
    rollback.add_argument("--reason", help="kept in the rollout's history")
    status = sub.add_parser("status", argument_default=argparse.SUPPRESS, help="rollout states, as a table")
    status.add_argument("model", nargs="?")
    status.add_argument("--router", **router)
    status.add_argument("--json", dest="as_json", action="store_true", help="the states as the router answers them")


def parse_args(argv: Sequence[str]) -> tuple[str, BuildRequest | RepositoryArgs | arg_types.Args, bool]:
    """The command, the request it acts on, and whether to hide progress lines."""
    fields = vars(_parser().parse_args(list(argv)))
    command, quiet = fields.pop("command"), fields.pop("quiet", False)
    if command == "build":
        from export.build import BuildRequest

        return command, BuildRequest(**fields), quiet
    if command in ("rollback", "status"):
        fields.pop("repository")
        return command, (arg_types.RollbackArgs if command == "rollback" else arg_types.StatusArgs)(**fields), quiet
    if command == "promote":
        return command, arg_types.PromoteArgs(**fields), quiet
    return command, RepositoryArgs(**fields), quiet


def _progress(quiet: bool):
    def emit(line: str) -> None:
        if not quiet:
            print(f"  {line}", file=sys.stderr, flush=True)
    return emit


def cmd_build(req: BuildRequest, quiet: bool = False) -> int:
    import torch  # noqa: F401  (importing torch sets its logger's level, so it comes first)

    from export.build import build

    logging.getLogger("torch").setLevel(logging.ERROR)
    result = build(req, _progress(quiet))
    accuracy = f"accuracy {result.accuracy:.4f}, " if result.accuracy is not None else ""
    took = "trained" if result.trained else "exported"
    print(f"wrote {result.model} v{result.version} ({result.arch}) -> {result.path}: "
          f"{accuracy}parity error {result.parity_error:.2e}, {took} in {result.seconds:.1f}s")
    return 0


def _sci(value) -> str:
    return f"{value:.1e}" if isinstance(value, (int, float)) else "-"


def cmd_list(args: RepositoryArgs) -> int:
    from export.repository import list_versions
    from export.specs import check_name

    if args.model and not (args.repository / args.model).is_dir():
        check_name(args.model)  # unknown name -> the clear error
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


def cmd_validate(args: RepositoryArgs) -> int:
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
        command, request, quiet = parse_args(sys.argv[1:] if argv is None else argv)
        if command == "build":
            return cmd_build(request, quiet)
        commands = {"list": cmd_list, "validate": cmd_validate, "promote": rollouts.promote,
                    "rollback": rollouts.rollback, "status": rollouts.status}
        return commands[command](request)
    except ExportError as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
