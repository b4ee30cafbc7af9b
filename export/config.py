"""`config.pbtxt` written and read through Triton's model-config schema.

Nothing here is a string template: the config is a `ModelConfig` protobuf
message, printed and parsed with `google.protobuf.text_format`, so a field
Triton does not know is an error here rather than at server start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from export.constants import CONFIG_NAME, LABELS_NAME, MAX_BATCH_SIZE, PLATFORM
from export.errors import ExportError
from export.specs import ModelSpec

PREFERRED_BATCH_SIZES = (8, 16, 32)
MAX_QUEUE_DELAY_US = 500


@dataclass(frozen=True)
class VersionPolicy:
    """`all`, `latest:N` or `specific:1,2` - Triton's three policies."""

    kind: str
    values: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        kind, _, rest = text.partition(":")
        try:
            values = tuple(int(v) for v in rest.split(",")) if rest else ()
        except ValueError:
            values = (0,)
        if kind == "all" and not values:
            return cls("all")
        if kind == "latest" and len(values) == 1 and values[0] >= 1:
            return cls("latest", values)
        if kind == "specific" and values and all(v >= 1 for v in values):
            return cls("specific", tuple(sorted(set(values))))
        raise ExportError(f"bad version policy {text!r}: use 'all', 'latest:N' or 'specific:1,2'")

    def apply(self, config: mc.ModelConfig) -> None:
        config.ClearField("version_policy")
        if self.kind == "all":
            config.version_policy.all.SetInParent()
        elif self.kind == "latest":
            config.version_policy.latest.num_versions = self.values[0]
        else:
            config.version_policy.specific.versions.extend(self.values)

    @classmethod
    def of(cls, config: mc.ModelConfig) -> "VersionPolicy":
        which = config.version_policy.WhichOneof("policy_choice")
        if which == "latest":
            return cls("latest", (config.version_policy.latest.num_versions,))
        if which == "specific":
            return cls("specific", tuple(config.version_policy.specific.versions))
        return cls("all")

    def __str__(self) -> str:
        return self.kind + (":" + ",".join(map(str, self.values)) if self.values else "")


def build_config(spec: ModelSpec, policy: VersionPolicy, instance_kind: str = "auto",
                 instances: int = 1) -> mc.ModelConfig:
    config = mc.ModelConfig(name=spec.name, platform=PLATFORM, max_batch_size=MAX_BATCH_SIZE)
    inp = config.input.add(name=spec.input_name, data_type=mc.TYPE_UINT8)
    inp.dims.extend(spec.input_dims)
    out = config.output.add(name=spec.output_name, data_type=mc.TYPE_FP32, label_filename=LABELS_NAME)
    out.dims.extend(spec.output_dims)
    config.dynamic_batching.preferred_batch_size.extend(PREFERRED_BATCH_SIZES)
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    policy.apply(config)
    kind = mc.ModelInstanceGroup.Kind.Value(f"KIND_{instance_kind.upper()}")
    config.instance_group.add(name=spec.name, count=instances, kind=kind)
    for key, value in sorted(spec.parameters.items()):
        config.parameters[key].string_value = value
    config.parameters["labels"].string_value = ",".join(spec.labels)
    return config


def render(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse(text: str, source: str = CONFIG_NAME) -> mc.ModelConfig:
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise ExportError(f"{source}: not a valid Triton model config: {exc}") from None
    return config


def read_config(model_dir: Path) -> mc.ModelConfig | None:
    path = model_dir / CONFIG_NAME
    if not path.is_file():
        return None
    return parse(path.read_text(encoding="utf-8"), str(path))
