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


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        options = ort.SessionOptions()
        threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "0"))
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
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
