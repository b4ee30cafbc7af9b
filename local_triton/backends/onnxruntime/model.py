"""A Python-based Triton backend named `onnxruntime`.

Triton loads `<backend-dir>/onnxruntime/model.py` for every model whose
config says `platform: "onnxruntime_onnx"` when no native ONNX Runtime
backend is installed, so the repository's configs stay exactly what the NGC
image's native backend reads. Each `execute` call receives every request of
one dynamic batch: their inputs are concatenated, run as one session run,
and the outputs split back per request.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _parameter(config: dict, key: str) -> str | None:
    value = config.get("parameters", {}).get(key)
    return value.get("string_value") if isinstance(value, dict) else None


def session_options(config: dict, env) -> ort.SessionOptions:
    """The session's threads as Triton's native backend reads them (the
    model config's `intra_op_thread_count` and `inter_op_thread_count`
    parameters; 0, the default, is one thread per core), the environment's
    ORT_INTRA_OP_THREADS over both. ORT's idle threads spin by default,
    waiting for the next run: a whole core per model that just served, taken
    from the router and the clients on a small CPU host.
    ORT_ALLOW_SPINNING=1 gives them back their spin."""
    options = ort.SessionOptions()
    intra = env.get("ORT_INTRA_OP_THREADS") or _parameter(config, "intra_op_thread_count") or "0"
    inter = _parameter(config, "inter_op_thread_count") or "0"
    if int(intra) > 0:
        options.intra_op_num_threads = int(intra)
    if int(inter) > 0:
        options.inter_op_num_threads = int(inter)
    spin = "1" if env.get("ORT_ALLOW_SPINNING", "0") == "1" else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        self.session = ort.InferenceSession(path, session_options(config, os.environ),
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests):
        feeds = {name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
                 for name in self.inputs}
        first = feeds[self.inputs[0]]
        if not self.batched:
            return [self._run({n: feeds[n][i] for n in self.inputs}) for i in range(len(requests))]
        sizes = [a.shape[0] for a in first]
        try:
            results = self.session.run(self.outputs, {n: np.concatenate(v) for n, v in feeds.items()})
        except Exception as exc:  # onnxruntime raises its own exception types
            error = pb_utils.TritonError(f"onnxruntime: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        bounds = np.cumsum(sizes)[:-1]
        per_output = [np.split(r, bounds) for r in results]
        return [
            pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor(name, np.ascontiguousarray(parts[i]))
                for name, parts in zip(self.outputs, per_output)
            ])
            for i in range(len(requests))
        ]

    def _run(self, feed):
        try:
            results = self.session.run(self.outputs, feed)
        except Exception as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime: {exc}"))
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, r) for n, r in zip(self.outputs, results)])

    def finalize(self):
        self.session = None
