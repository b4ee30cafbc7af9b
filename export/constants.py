"""The fixed facts of the model repository this package writes and checks.

Nothing here imports torch, onnx or protobuf, so that `--help`, `list` and
`validate` start without them.
"""

# The NGC image this repository targets (tritonserver 24.10) runs ONNX
# Runtime 1.19, which reads IR version 10 and opsets up to 21. Newer `onnx`
# packages write IR 11 by default, so both are pinned here.
OPSET = 18
IR_VERSION = 10
MAX_OPSET = 21

PLATFORM = "onnxruntime_onnx"
MAX_BATCH_SIZE = 64
# Triton's instance group kinds, lower case: `auto` puts instances on a GPU
# where Triton sees one, else on the CPU.
INSTANCE_KINDS = ("auto", "cpu", "gpu")

CONFIG_NAME = "config.pbtxt"
LABELS_NAME = "labels.txt"
MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
