"""`build NAME --from SOURCE`: any PyTorch model, from a factory or a .pt2 program."""

import json
import shutil
import textwrap
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export.cli import main
from export.config import read_config

FACTORY = '''
import torch
from torch import nn

from export import Servable


class TwoHeads(nn.Module):
    """FP32 features and INT64 indices into an embedding -> class scores and a vector."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, features, tokens):
        embedding = features + self.embedding(tokens).mean(1)
        return torch.softmax(self.head(embedding), dim=-1), embedding


def servable():
    torch.manual_seed(0)
    return Servable(
        module=TwoHeads().eval(),
        example_inputs={"features": torch.randn(5, 4), "tokens": torch.randint(0, 10, (5, 3))},
        output_names=["scores", "embedding"],
        labels={"scores": ("cat", "dog", "bird")},
        parameters={"note": "a test model"},
        metrics={"accuracy": 0.5},
        description="two inputs, two outputs",
    )
'''


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def factory(tmp_path) -> Path:
    return write(tmp_path / "twoheads.py", FACTORY)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A repository holding one version of the factory's model, built once."""
    root = tmp_path_factory.mktemp("built")
    source = write(root / "twoheads.py", FACTORY)
    assert main(["--repository", str(root / "repo"), "build", "model", "--from", f"{source}:servable", "-q"]) == 0
    return root / "repo"


def test_a_factory_builds_validates_and_declares_its_signature(capsys, tmp_path, factory):
    repo = tmp_path / "repo"
    code, out, err = run(capsys, "--repository", repo, "build", "twoheads", "--from", f"{factory}:servable")
    assert code == 0, err
    assert out.startswith(f"wrote twoheads v1 (TwoHeads) -> {repo / 'twoheads' / '1'}: accuracy 0.5000, parity error ")
    assert "twoheads v1: parity ok" in err and "over 5 example and 5 random rows" in err
    assert run(capsys, "--repository", repo, "validate") == (0, f"ok: 1 model(s), 1 version(s) in {repo}\n", "")

    config = read_config(repo / "twoheads")
    assert (config.name, config.platform, config.max_batch_size) == ("twoheads", "onnxruntime_onnx", 64)
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("features", "TYPE_FP32", [4]), ("tokens", "TYPE_INT64", [3])]
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims), t.label_filename) for t in config.output] == [
        ("scores", "TYPE_FP32", [3], "labels.txt"), ("embedding", "TYPE_FP32", [4], "")]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.version_policy.WhichOneof("policy_choice") == "all"
    assert {k: v.string_value for k, v in config.parameters.items()} == {"note": "a test model"}
    assert (repo / "twoheads" / "labels.txt").read_text() == "cat\ndog\nbird\n"
    meta = json.loads((repo / "twoheads" / "1" / "metadata.json").read_text())
    assert meta["accuracy"] == 0.5 and meta["description"] == "two inputs, two outputs"
    assert meta["source"] == f"{factory}:servable" and meta["parity_max_abs_error"] <= 1e-4


def test_several_labelled_outputs_get_one_label_file_each(capsys, tmp_path):
    source = write(tmp_path / "two_labelled.py", '''
        import torch
        from export import Servable

        class Both(torch.nn.Module):
            def forward(self, x):
                return {"colour": torch.softmax(x[:, :2], -1), "size": torch.softmax(x, -1)}

        def servable():
            return Servable(Both(), {"x": torch.rand(3, 3)}, ["colour", "size"],
                            labels={"colour": ("red", "blue"), "size": ("s", "m", "l")})
    ''')
    repo = tmp_path / "repo"
    assert run(capsys, "--repository", repo, "build", "both", "--from", f"{source}:servable")[0] == 0
    config = read_config(repo / "both")
    assert [(o.name, o.label_filename) for o in config.output] == [("colour", "colour_labels.txt"),
                                                                  ("size", "size_labels.txt")]
    assert (repo / "both" / "size_labels.txt").read_text() == "s\nm\nl\n"
    assert not (repo / "both" / "labels.txt").exists()
    assert run(capsys, "--repository", repo, "validate")[0] == 0


def _save_program(path: Path, dynamic: bool) -> Path:
    import torch

    class Scale(torch.nn.Module):
        def forward(self, x, flags):
            return {"scaled": x * 2.0, "kept": flags & (x > 0)}

    args = (torch.randn(4, 6), torch.ones(4, 6, dtype=torch.bool))
    batch = torch.export.Dim("batch")
    shapes = ({0: batch}, {0: batch}) if dynamic else None
    torch.export.save(torch.export.export(Scale(), args, dynamic_shapes=shapes), str(path))
    return path


def test_a_torch_export_program_builds(capsys, tmp_path):
    program = _save_program(tmp_path / "scale.pt2", dynamic=True)
    repo = tmp_path / "repo"
    code, out, err = run(capsys, "--repository", repo, "build", "scale", "--from", program)
    assert code == 0, err
    assert out.startswith(f"wrote scale v1 (ExportedProgram) -> {repo / 'scale' / '1'}: parity error ")
    config = read_config(repo / "scale")
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("x", "TYPE_FP32", [6]), ("flags", "TYPE_BOOL", [6])]
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.output] == [
        ("scaled", "TYPE_FP32", [6]), ("kept", "TYPE_BOOL", [6])]
    assert run(capsys, "--repository", repo, "validate")[0] == 0


COUNTER = '''
    import torch
    from export import Servable

    class Drifts(torch.nn.Module):
        """Each eager call adds a larger constant than the traced graph holds."""
        calls = 0

        def forward(self, x):
            Drifts.calls += 1
            return x + float(Drifts.calls)

    def servable():
        return Servable(Drifts(), {"x": torch.rand(4, 2)}, ["y"])
'''
BAD_SOURCES = {
    "wrong_type.py": "def servable():\n    return 42\n",
    "not_callable.py": "servable = 3\n",
    "float64.py": "import torch\nfrom export import Servable\n\ndef servable():\n"
                  "    return Servable(torch.nn.Identity(), {'x': torch.zeros(2, 3, dtype=torch.float64)}, ['y'])\n",
    "drifts.py": textwrap.dedent(COUNTER),
    "broken.py": "import torch\ndef servable(:\n",
    "raises.py": "def servable():\n    raise RuntimeError('no weights here')\n",
}


@pytest.mark.parametrize("source,message", [
    ("missing.py:servable", "error: source file {tmp}/missing.py does not exist"),
    ("wrong_type.py:nope", "error: {tmp}/wrong_type.py has no attribute 'nope'"),
    ("wrong_type.py:servable", "error: {tmp}/wrong_type.py:servable returned int, not export.Servable"),
    ("not_callable.py:servable", "error: {tmp}/not_callable.py:servable is int, not a callable returning export.Servable"),
    ("float64.py:servable", "error: input 'x' is float64; supported dtypes: bool, uint8, int8, int16, int32, int64, "
                            "float16, float32"),
    ("drifts.py:servable", "error: parity check failed for other v1: output 'y', max abs error "),
    ("broken.py:servable", "error: cannot load {tmp}/broken.py: SyntaxError: invalid syntax"),
    ("raises.py:servable", "error: {tmp}/raises.py:servable raised RuntimeError: no weights here"),
    ("no_such_package.models:servable", "error: no module named 'no_such_package.models'"),
    ("nothing-here", "error: bad --from 'nothing-here': use path/to/file.py:factory, package.module:factory "
                     "or path/to/model.pt2"),
    ("static.pt2", "error: {tmp}/static.pt2: input 'x' has a static batch axis ([4, 6]); export it with a "
                   "torch.export.Dim for axis 0 in dynamic_shapes"),
    ("absent.pt2", "error: program file {tmp}/absent.pt2 does not exist"),
])
def test_a_bad_source_is_one_line_and_writes_nothing(capsys, tmp_path, built, source, message):
    for name, text in BAD_SOURCES.items():
        (tmp_path / name).write_text(text)
    if source == "static.pt2":
        _save_program(tmp_path / "static.pt2", dynamic=False)
    repo = tmp_path / "repo"
    shutil.copytree(built, repo)
    before = snapshot(repo)
    full = source if "." not in source.split(":")[0] or source.startswith("no_such") else f"{tmp_path}/{source}"
    code, out, err = run(capsys, "--repository", repo, "build", "other", "--from", full, "-q")
    assert (code, out) == (1, "")
    assert len(err.splitlines()) == 1, err
    assert err.startswith(message.format(tmp=tmp_path)), err
    assert err.endswith("; nothing written\n") or "parity" not in message
    assert snapshot(repo) == before


def test_atol_overrides_the_tolerance_and_a_failure_writes_nothing(capsys, tmp_path, factory):
    repo = tmp_path / "repo"
    code, out, err = run(capsys, "--repository", repo, "build", "model", "--from", f"{factory}:servable",
                         "--atol", "-1", "-q")
    assert (code, err) == (1, "error: --atol must be a number >= 0, got -1.0\n")
    assert not repo.exists()


def test_a_version_with_another_signature_is_refused(capsys, tmp_path, built):
    repo = tmp_path / "repo"
    shutil.copytree(built, repo)
    other = write(tmp_path / "other.py", '''
        import torch
        from export import Servable

        def servable():
            return Servable(torch.nn.Identity(), {"features": torch.rand(2, 4)}, ["scores"])
    ''')
    before = snapshot(repo)
    code, out, err = run(capsys, "--repository", repo, "build", "model", "--from", f"{other}:servable", "-q")
    assert code == 1
    assert err.startswith("error: model v2 cannot be served beside the existing versions: inputs differ: existing "
                          "versions have features FP32 [4], tokens INT64 [3]; this one has features FP32 [4]")
    assert snapshot(repo) == before


def test_built_in_options_do_not_apply_to_from(capsys, tmp_path, factory):
    code, out, err = run(capsys, "--repository", tmp_path / "repo", "build", "m", "--from", f"{factory}:servable",
                         "--arch", "cnn")
    assert (code, err) == (1, "error: --arch and --epochs apply to the built-in examples, not to --from\n")
