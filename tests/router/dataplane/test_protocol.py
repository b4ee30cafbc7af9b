import json

import numpy as np

from router.dataplane.protocol import InferRequest, Output, Tensor, encode_response


def test_a_json_response_is_json_even_for_nan_and_infinity():
    request = InferRequest((Tensor("x", "FP32", np.zeros((1, 2), np.float32)),), (Output("y"),))
    outputs = {"y": np.array([[0.25, np.nan, np.inf, -1.5]], dtype=np.float32)}
    body, header_length = encode_response("m", 3, request, outputs)
    assert header_length is None
    assert json.loads(body) == {"model_name": "m", "model_version": "3", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [0.25, None, None, -1.5]}]}


def test_binary_outputs_follow_the_json_header_and_the_id_leads_it():
    request = InferRequest((Tensor("x", "FP32", np.zeros((1, 2), np.float32)),), (Output("y", binary=True),),
                           id="req-1")
    outputs = {"y": np.arange(4, dtype=np.float32).reshape(1, 4)}
    body, header_length = encode_response("m", 1, request, outputs)
    header = json.loads(body[:header_length])
    assert list(header) == ["id", "model_name", "model_version", "outputs"] and header["id"] == "req-1"
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(body[header_length:], dtype="<f4").tolist() == [0.0, 1.0, 2.0, 3.0]
