"""config.pbtxt from the ONNX graph's own signature, and the renaming that gives
the graph the user's names."""

import onnx
import pytest
from onnx import TensorProto, helper

from export.config import VersionPolicy, read_config
from export.errors import ExportError
from export.graph import rename_values
from export.signature import config_from_graph, label_files
from export.specs import get_spec
from tests.conftest import MODEL_REPOSITORY


@pytest.mark.parametrize("model", ["sentiment", "digits"])
def test_the_committed_configs_are_what_their_graphs_and_specs_give(model):
    spec = get_spec(model)
    graph = onnx.load(str(MODEL_REPOSITORY / model / "2" / "model.onnx"))
    config = config_from_graph(model, graph, VersionPolicy("all"), {spec.output_name: spec.labels},
                               {**spec.parameters, "labels": ",".join(spec.labels)})
    assert config == read_config(MODEL_REPOSITORY / model)


def test_label_files():
    assert label_files({}) == {}
    assert label_files({"scores": ("a",)}) == {"scores": "labels.txt"}
    assert label_files({"a": ("x",), "b": ("y",)}) == {"a": "a_labels.txt", "b": "b_labels.txt"}


def _graph(**shapes):
    x = helper.make_tensor_value_info("__in", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("__out", TensorProto.FLOAT, shapes.get("out", ["batch", 3]))
    nodes = [helper.make_node("Relu", ["__in"], ["embedding"]),  # an internal value with the user's name
             helper.make_node("Neg", ["embedding"], ["__out"])]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]))


def test_renaming_moves_internal_values_out_of_the_way():
    model = _graph()
    rename_values(model.graph, {"__in": "x", "__out": "embedding"})
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["x"]
    assert [o.name for o in model.graph.output] == ["embedding"]
    assert [(list(n.input), list(n.output)) for n in model.graph.node] == [
        (["x"], ["embedding__1"]), (["embedding__1"], ["embedding"])]


def test_a_static_batch_axis_is_refused():
    model = _graph(out=[2, 3])
    with pytest.raises(ExportError, match=r"^'__out' has shape \[2, 3\] in the ONNX graph; its batch axis must be dynamic$"):
        config_from_graph("m", model, VersionPolicy("all"), {}, {})
