import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export.config import VersionPolicy, build_config, parse, render
from export.errors import ExportError
from export.specs import get_spec


def test_config_declares_what_triton_and_clients_need():
    config = build_config(get_spec("sentiment"), VersionPolicy("all"))
    assert config.name == "sentiment"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 64
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("text", mc.TYPE_UINT8, [256])]
    assert [(o.name, o.data_type, list(o.dims), o.label_filename) for o in config.output] == [
        ("probabilities", mc.TYPE_FP32, [2], "labels.txt")]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.version_policy.WhichOneof("policy_choice") == "all"
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, mc.ModelInstanceGroup.KIND_AUTO)]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["input_kind"] == "text_utf8"
    assert params["text_length"] == "256"
    assert params["labels"] == "negative,positive"


def test_image_model_parameters():
    config = build_config(get_spec("digits"), VersionPolicy("all"), instance_kind="gpu", instances=2)
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["input_kind"] == "image_gray"
    assert (params["image_height"], params["image_width"]) == ("8", "8")
    assert list(config.input[0].dims) == [8, 8]
    assert list(config.output[0].dims) == [10]
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, mc.ModelInstanceGroup.KIND_GPU)]


def test_render_parse_round_trip():
    config = build_config(get_spec("digits"), VersionPolicy.parse("latest:2"))
    assert parse(render(config)) == config


def test_parse_rejects_fields_outside_the_schema():
    with pytest.raises(ExportError, match=r"^x/config.pbtxt: not a valid Triton model config: 1:1 : .*no_such_field"):
        parse('no_such_field: 3', "x/config.pbtxt")


@pytest.mark.parametrize("text,kind,values", [
    ("all", "all", ()),
    ("latest:2", "latest", (2,)),
    ("specific:2,1,2", "specific", (1, 2)),
])
def test_version_policy_parse(text, kind, values):
    policy = VersionPolicy.parse(text)
    assert (policy.kind, policy.values) == (kind, values)
    config = mc.ModelConfig()
    policy.apply(config)
    assert VersionPolicy.of(config) == policy


@pytest.mark.parametrize("text", ["", "newest", "latest", "latest:0", "specific:", "specific:a", "all:1"])
def test_version_policy_rejects(text):
    with pytest.raises(ExportError) as err:
        VersionPolicy.parse(text)
    assert str(err.value) == f"bad version policy {text!r}: use 'all', 'latest:N' or 'specific:1,2'"
