"""The export CLI, called as `main([...])`: exit codes and exact messages."""

import json
import shutil
from pathlib import Path

import pytest

from export.cli import main
from tests.conftest import MODEL_REPOSITORY


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def digits_repo(tmp_path):
    """Only the digits model (fast to train) from the checked-in repository."""
    repo = tmp_path / "repo"
    shutil.copytree(MODEL_REPOSITORY / "digits", repo / "digits")
    return repo


def test_unknown_model(capsys, digits_repo):
    code, out, err = run(capsys, "--repository", str(digits_repo), "build", "nope")
    assert (code, out, err) == (1, "", "error: unknown model 'nope'; known models: digits, sentiment; export your "
                                "own with --from FILE.py:FACTORY or --from MODEL.pt2\n")


def test_existing_version_is_refused_and_nothing_changes(capsys, digits_repo):
    before = _snapshot(digits_repo)
    code, out, err = run(capsys, "--repository", str(digits_repo), "build", "digits", "--version", "2")
    assert code == 1
    assert err == f"error: digits version 2 already exists at {digits_repo / 'digits' / '2'}; versions are immutable\n"
    assert _snapshot(digits_repo) == before


def test_unwritable_repository(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = run(capsys, "--repository", str(blocker / "repo"), "build", "digits")
    assert (code, err) == (1, f"error: model repository {blocker / 'repo'} is not writable\n")
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("args,message", [
    (["--arch", "resnet"], "unknown architecture 'resnet' for digits; choose from: linear, cnn"),
    (["--version", "0"], "version must be a positive integer, got 0"),
    (["--instances", "0"], "instances must be at least 1, got 0"),
    (["--version-policy", "newest"], "bad version policy 'newest': use 'all', 'latest:N' or 'specific:1,2'"),
])
def test_bad_build_options(capsys, digits_repo, args, message):
    before = _snapshot(digits_repo)
    code, out, err = run(capsys, "--repository", str(digits_repo), "build", "digits", *args)
    assert (code, out, err) == (1, "", f"error: {message}\n")
    assert _snapshot(digits_repo) == before


def test_usage_errors_exit_2_with_one_line(capsys):
    code, out, err = run(capsys, "build")
    assert code == 2
    assert err == "error: the following arguments are required: model (see --help)\n"
    code, out, err = run(capsys, "build", "digits", "--version", "two")
    assert (code, err) == (2, "error: argument --version: invalid int value: 'two' (see --help)\n")


def test_failed_parity_writes_nothing(capsys, digits_repo):
    before = _snapshot(digits_repo)
    code, out, err = run(capsys, "--repository", str(digits_repo), "build", "digits", "--arch", "linear",
                         "--epochs", "2", "--atol", "0", "-q")  # no export is bit-exact
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: parity check failed for digits v3: output 'probabilities', max abs error ")
    assert last.endswith(" > 0 on the example inputs (450 rows); nothing written")
    assert _snapshot(digits_repo) == before


def test_build_writes_the_next_version_and_lists_it(capsys, digits_repo):
    code, out, err = run(capsys, "--repository", str(digits_repo), "build", "digits", "--arch", "linear")
    assert code == 0, err
    assert out.startswith(f"wrote digits v3 (linear) -> {digits_repo / 'digits' / '3'}: accuracy 0.9")
    assert "digits v3: parity ok, max abs error" in err  # progress goes to stderr
    meta = json.loads((digits_repo / "digits" / "3" / "metadata.json").read_text())
    assert meta["version"] == 3 and meta["architecture"] == "linear"
    assert meta["accuracy"] > 0.9 and meta["parity_max_abs_error"] <= 1e-4
    assert {"created", "sha256", "training_data", "source_commit"} <= meta.keys()

    code, out, err = run(capsys, "--repository", str(digits_repo), "list", "digits")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["MODEL", "VERSION", "ARCH", "ACCURACY", "PARITY", "CREATED", "SHA256", "COMMIT"]
    assert [ln.split()[:3] for ln in lines[1:4]] == [["digits", "1", "linear"], ["digits", "2", "cnn"],
                                                     ["digits", "3", "linear"]]
    assert lines[-1] == "3 version(s)"
    assert run(capsys, "--repository", str(digits_repo), "validate")[0] == 0


def test_list_unknown_model(capsys, digits_repo):
    code, out, err = run(capsys, "--repository", str(digits_repo), "list", "nope")
    assert (code, err) == (1, "error: unknown model 'nope'; known models: digits, sentiment\n")


def test_validate_the_checked_in_repository(capsys):
    code, out, err = run(capsys, "--repository", str(MODEL_REPOSITORY), "validate")
    assert (code, err) == (0, "")
    # embedder/1 is built by `make models` and not committed: present or not, the rest is the same
    built = (MODEL_REPOSITORY / "embedder" / "1").is_dir()
    assert out == f"ok: {2 + built} model(s), {4 + built} version(s) in {MODEL_REPOSITORY}\n"


def test_validate_reports_one_line_per_problem(capsys, repo_copy):
    (repo_copy / "digits" / "1" / "model.onnx").unlink()
    (repo_copy / "digits" / "v3").mkdir()
    onnx2 = repo_copy / "sentiment" / "2" / "model.onnx"
    onnx2.write_bytes(onnx2.read_bytes() + b"\0")
    cfg = repo_copy / "sentiment" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("dims: 256", "dims: 128"))
    (repo_copy / "broken").mkdir()
    (repo_copy / "broken" / "config.pbtxt").write_text("max_batch_size: many")
    code, out, err = run(capsys, "--repository", str(repo_copy), "validate")
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith(f"error: {repo_copy / 'broken' / 'config.pbtxt'}: not a valid Triton model config: ")
    assert lines[1:] == [
        "error: digits: version folder 'v3' is not a positive integer",
        "error: digits/1: model.onnx is missing",
        "error: sentiment/1: input 'text' has shape [-1, 256] in model.onnx but config declares [-1, 128]",
        "error: sentiment/2: model.onnx does not match the sha256 in metadata.json",
        "error: sentiment/2: model.onnx is not a readable ONNX model (DecodeError)",
        "6 problem(s) in " + str(repo_copy),
    ]
