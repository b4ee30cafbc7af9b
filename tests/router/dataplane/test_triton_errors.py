"""How Triton's and the transport's errors reach a client."""

from __future__ import annotations

import asyncio

import pytest
from tritonclient.utils import InferenceServerException

from router.dataplane.triton import classify
from router.errors import BadRequest, TritonFailed, TritonTimeout, TritonUnavailable, VersionUnavailable


@pytest.mark.parametrize("exc,kind", [
    (InferenceServerException("Request for unknown model: 'x' version 3 is not at ready state",
                              status="StatusCode.UNAVAILABLE"), VersionUnavailable),
    (InferenceServerException("[request id: a] onnx runtime error 2: INVALID_ARGUMENT : indices element out of "
                              "data bounds", status="StatusCode.INTERNAL"), BadRequest),  # the backend's refusal
    (InferenceServerException("unexpected shape for input 'text'", status="StatusCode.INVALID_ARGUMENT"), BadRequest),
    (InferenceServerException("unexpected shape for input 'text'", status="400"), BadRequest),
    (InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED"), TritonTimeout),
    (InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE"),
     TritonUnavailable),
    (InferenceServerException("Stub process is not healthy", status="StatusCode.INTERNAL"), TritonFailed),
    (asyncio.TimeoutError(), TritonTimeout),
    (ConnectionRefusedError(), TritonUnavailable),
])
def test_classify(exc, kind):
    assert type(classify(exc)) is kind
