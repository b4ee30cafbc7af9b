"""The Open Inference Protocol's HTTP wire format (KServe v2, as Triton speaks
it), knowing nothing of routing: an inference request's JSON header and
binary tail -> typed tensors, and tensors -> a response body.

Binary tensor data (Triton's extension): a request whose JSON header is
followed by raw tensors says how long the header is in the
`Inference-Header-Content-Length` header, and each such input carries
`parameters.binary_data_size`; the tensors follow in input order. An output
is returned binary when its `binary_data` parameter says so, or, without
one, when the request's `binary_data_output` parameter does. BYTES elements
are each a 4-byte little-endian length and the bytes."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np
import orjson

from router.errors import BadRequest

DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
MAX_RANK = 16


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    array: np.ndarray  # BYTES: an object array of bytes


@dataclass(frozen=True)
class Output:
    name: str
    class_count: int = 0  # the classification extension: top classes as "score:index:label"
    binary: bool | None = None  # None: as the request's binary_data_output says


@dataclass(frozen=True)
class InferRequest:
    inputs: tuple[Tensor, ...]
    outputs: tuple[Output, ...] = ()  # empty: every output of the model
    id: str | None = None
    binary_output: bool = False
    parameters: dict = field(default_factory=dict)
    # what is worked out from the request alone, once (a parse the lane keeps serves many requests)
    derived: dict = field(default_factory=dict, compare=False, repr=False)


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "BYTES"
    for name, dtype in DTYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"no protocol datatype for {array.dtype}")


def serialize_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes(raw: bytes | memoryview, count: int, what: str) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise BadRequest(f"{what}: BYTES data holds fewer than {count} elements")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(f"{what}: a BYTES element runs past the end of its data")
        out[i] = bytes(raw[offset:offset + length])
        offset += length
    if offset != len(raw):
        raise BadRequest(f"{what}: BYTES data holds more than {count} elements")
    return out


def raw_bytes(array: np.ndarray) -> bytes:
    """An array's raw form: what binary tensor data carries, and what cache keys hash."""
    return serialize_bytes(array) if datatype_of(array) == "BYTES" else np.ascontiguousarray(array).tobytes()


# --- requests ----------------------------------------------------------------

def _shape(value, what: str, max_elements: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > MAX_RANK or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise BadRequest(f"{what}: 'shape' must be a list of at most {MAX_RANK} non-negative integers")
    if math.prod(value) > max_elements or any(d > max_elements for d in value):
        raise BadRequest(f"{what}: shape {value} has {math.prod(value)} elements or a dimension over "
                         f"{max_elements}; at most {max_elements} elements are accepted")
    return tuple(value)


def _flatten_strings(data, what: str) -> list[bytes]:
    out: list[bytes] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            if not isinstance(item, str):
                raise BadRequest(f"{what}: BYTES data must be strings")
            out.append(item.encode("utf-8", "surrogatepass"))
        else:
            stack.pop()
    return out


def _json_data(data, datatype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """A tensor from JSON `data` (flat or nested, row-major)."""
    if not isinstance(data, list):
        raise BadRequest(f"{what}: 'data' must be a list")
    count = math.prod(shape)
    if datatype == "BYTES":
        flat = _flatten_strings(data, what)
        if len(flat) != count:
            raise BadRequest(f"{what}: 'data' holds {len(flat)} elements; shape {list(shape)} needs {count}")
        array = np.empty(count, dtype=object)
        array[:] = flat
        return array.reshape(shape)
    try:
        raw = np.array(data)
    except (ValueError, TypeError):
        raise BadRequest(f"{what}: 'data' is not a regular array of {datatype} values") from None
    if raw.size != count:
        raise BadRequest(f"{what}: 'data' holds {raw.size} elements; shape {list(shape)} needs {count}")
    dtype = DTYPES[datatype]
    kinds = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}[dtype.kind]
    if raw.size and raw.dtype.kind not in kinds:
        raise BadRequest(f"{what}: 'data' must hold {datatype} values")
    if raw.size and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise BadRequest(f"{what}: a value is out of range for {datatype}")
    return raw.astype(dtype).reshape(shape)


def _params(entry: dict, what: str) -> dict:
    params = entry.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"{what}: 'parameters' must be an object")
    if any(k.startswith("shared_memory") for k in params):
        raise BadRequest(f"{what}: shared memory is not available through the router")
    return params


def _input(entry, tail: memoryview, offset: int, max_elements: int) -> tuple[Tensor, int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise BadRequest("every input must be an object with a 'name'")
    what = f"input '{entry['name']}'"
    datatype = entry.get("datatype")
    if datatype not in DTYPES:
        raise BadRequest(f"{what}: unsupported datatype {datatype!r}; one of {', '.join(DTYPES)}")
    shape = _shape(entry.get("shape"), what, max_elements)
    size = _params(entry, what).get("binary_data_size")
    if size is None:
        if "data" not in entry:
            raise BadRequest(f"{what}: no 'data' and no binary_data_size")
        return Tensor(entry["name"], datatype, _json_data(entry["data"], datatype, shape, what)), offset
    if "data" in entry:
        raise BadRequest(f"{what}: both 'data' and binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(tail):
        raise BadRequest(f"{what}: binary_data_size {size!r} does not fit the binary data after the JSON header")
    chunk = tail[offset:offset + size]
    count = math.prod(shape)
    if datatype == "BYTES":
        array = deserialize_bytes(chunk, count, what)
    else:
        if size != count * DTYPES[datatype].itemsize:
            raise BadRequest(f"{what}: binary_data_size is {size} bytes; shape {list(shape)} of {datatype} needs "
                             f"{count * DTYPES[datatype].itemsize}")
        array = np.frombuffer(chunk, dtype=DTYPES[datatype]).copy()
    return Tensor(entry["name"], datatype, array.reshape(shape)), offset + size


def _output(entry) -> Output:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise BadRequest("every requested output must be an object with a 'name'")
    what = f"output '{entry['name']}'"
    params = _params(entry, what)
    count = params.get("classification", 0)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < 1 << 31:
        raise BadRequest(f"{what}: 'classification' must be a non-negative 32-bit integer")
    binary = params.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise BadRequest(f"{what}: 'binary_data' must be true or false")
    return Output(entry["name"], count, binary)


def decode_request(header: object, tail: bytes | memoryview, max_inputs: int, max_elements: int) -> InferRequest:
    """The parsed JSON header and the bytes after it -> a typed request, or BadRequest."""
    if not isinstance(header, dict):
        raise BadRequest("the inference request must be a JSON object")
    inputs, outputs = header.get("inputs"), header.get("outputs", [])
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list")
    if not isinstance(outputs, list):
        raise BadRequest("'outputs' must be a list")
    if len(inputs) > max_inputs or len(outputs) > max_inputs:
        raise BadRequest(f"at most {max_inputs} inputs and {max_inputs} outputs are accepted")
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    if params.get("sequence_id") not in (None, 0, ""):
        raise BadRequest("sequence requests are not available through the router")
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadRequest("'binary_data_output' must be true or false")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    view = memoryview(tail)
    tensors, offset = [], 0
    for entry in inputs:
        tensor, offset = _input(entry, view, offset, max_elements)
        tensors.append(tensor)
    if offset != len(view):
        raise BadRequest(f"{len(view) - offset} bytes of binary data after the JSON header belong to no input")
    wanted = tuple(_output(o) for o in outputs)
    for names in ([t.name for t in tensors], [o.name for o in wanted]):
        if len(set(names)) != len(names):
            raise BadRequest("a tensor is named twice")
    return InferRequest(tuple(tensors), wanted, request_id, binary_output, params)


# --- responses -----------------------------------------------------------------

def _json_values(array: np.ndarray) -> list:
    if array.dtype == object:
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in array.ravel()]
    return array.ravel().tolist()


def encode_response(model: str, version: int, request: InferRequest,
                    outputs: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary outputs follow it, else None)."""
    wanted = {o.name: o for o in request.outputs}
    names = [o.name for o in request.outputs] or list(outputs)
    entries, chunks = [], []
    for name in names:
        array = outputs[name]
        entry = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        binary = wanted[name].binary if name in wanted and wanted[name].binary is not None else request.binary_output
        if binary:
            raw = raw_bytes(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_values(array)
        entries.append(entry)
    body = {"model_name": model, "model_version": str(version), "outputs": entries}
    if request.id is not None:
        body = {"id": request.id, **body}
    header = orjson.dumps(body)  # NaN and Infinity, which JSON has not, as null
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
