"""`--help`, `list` and `validate` start without torch; `build` alone trains with it."""

import subprocess
import sys

import pytest

from export.cli import RepositoryArgs, parse_args
from export.specs import get_spec, spec_names
from tests.conftest import MODEL_REPOSITORY, ROOT

_PROBE = """
import sys
import export.cli
try:
    code = export.cli.main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
print(code, *sorted(m for m in sys.argv[1].split(",") if m in sys.modules))
"""
_REPO = ["--repository", str(MODEL_REPOSITORY)]


@pytest.mark.parametrize("argv,code,absent", [
    (["--help"], 0, "torch,onnx,tritonclient.grpc,google.protobuf,numpy"),
    ([*_REPO, "list"], 0, "torch,onnx,tritonclient.grpc"),
    ([*_REPO, "list", "digits"], 0, "torch,onnx,tritonclient.grpc"),
    ([*_REPO, "list", "nope"], 1, "torch,onnx,tritonclient.grpc"),
    ([*_REPO, "validate"], 0, "torch,onnxruntime"),
])
def test_commands_that_do_not_train_do_not_import_torch(argv, code, absent):
    proc = subprocess.run([sys.executable, "-c", _PROBE, absent, *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == str(code)  # none of `absent` was imported


def test_build_arguments_parse_into_a_build_request(tmp_path):
    command, req, quiet = parse_args(["--repository", str(tmp_path), "build", "digits", "--seed", "3", "-q"])
    assert (command, quiet) == ("build", True)
    assert (req.model, req.repository, req.seed, req.version, req.instance_kind, req.instances) == (
        "digits", tmp_path, 3, None, "auto", 1)
    command, req, quiet = parse_args(["--repository", str(tmp_path), "build", "digits",
                                      "--instance-kind", "gpu", "--version-policy", "latest:2"])
    assert (req.instance_kind, req.policy, req.seed, quiet) == ("gpu", "latest:2", 0, False)


def test_other_commands_parse_into_repository_args(tmp_path):
    assert parse_args(["--repository", str(tmp_path), "list", "digits"]) == (
        "list", RepositoryArgs(tmp_path, "digits"), False)
    assert parse_args(["--repository", str(tmp_path), "validate"]) == ("validate", RepositoryArgs(tmp_path), False)


def test_every_known_name_has_its_spec():
    assert spec_names() == ["digits", "sentiment"]
    assert [get_spec(name).name for name in spec_names()] == spec_names()
    assert get_spec("nope") is None


def test_a_quiet_build_prints_one_line_and_nothing_on_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "export", "--repository", str(tmp_path), "build", "digits",
                           "--arch", "linear", "--epochs", "1", "-q"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.startswith(f"wrote digits v1 (linear) -> {tmp_path / 'digits' / '1'}: ")
