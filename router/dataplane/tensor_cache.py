"""What a raw-tensor answer (the Open Inference Protocol's routes) is cached
under and as, beside cache.py's keys for predictions: the key of a request's
inputs and requested outputs, and the entry its outputs are stored as."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import struct

import numpy as np
import orjson

from router.dataplane.cache import output_part
from router.dataplane.protocol import DTYPES, Tensor, datatype_of, deserialize_bytes, raw_bytes
from router.errors import BadRequest


def tensor_cache_key(namespace: str, model: str, version: int, inputs: tuple[Tensor, ...],
                     outputs: list[tuple[str, int]]) -> str:
    """namespace:model:v<version>:<sha256 of the inputs>:<hash of the output request>, beside
    `cache_key`: every input's name, datatype, shape and bytes (in name order: the order of a
    request's inputs does not change its result), and each requested output with its
    classification count (the encoding asked for, JSON or binary, is not part of it)."""
    digest = hashlib.sha256()
    for tensor in sorted(inputs, key=lambda t: t.name):
        raw = raw_bytes(tensor.array)
        digest.update(json.dumps([tensor.name, tensor.datatype, list(tensor.array.shape), len(raw)]).encode())
        digest.update(raw)
    return f"{namespace}:{model}:v{version}:{digest.hexdigest()}:{_outputs_part(tuple(sorted(outputs)))}"


@functools.lru_cache(maxsize=1024)
def _outputs_part(outputs: tuple[tuple[str, int], ...]) -> str:
    """The output request's part of a key, hashed once per distinct request of outputs."""
    return output_part("oip:" + json.dumps([list(o) for o in outputs]))


def complete(outputs: dict[str, np.ndarray] | None, wanted: list[tuple[str, int]]) -> dict[str, np.ndarray] | None:
    """A cached answer that holds every output asked for; else None (a miss)."""
    return outputs if outputs is not None and all(name in outputs for name, _ in wanted) else None


_MAGIC = b"oip1"


def pack(outputs: dict[str, np.ndarray]) -> bytes:
    """Outputs as a cache entry: magic, header length, JSON header, raw tensors."""
    raws = [raw_bytes(a) for a in outputs.values()]
    header = json.dumps([[name, datatype_of(a), list(a.shape), len(raw)]
                         for (name, a), raw in zip(outputs.items(), raws)]).encode()
    return b"".join([_MAGIC, struct.pack("<I", len(header)), header, *raws])


def unpack(raw: bytes | None) -> dict[str, np.ndarray] | None:
    """A cache entry's outputs; anything malformed (the cache is not trusted) is None."""
    if raw is None or not raw.startswith(_MAGIC) or len(raw) < 8:
        return None
    try:
        (length,) = struct.unpack_from("<I", raw, 4)
        entries = orjson.loads(raw[8:8 + length])
        offset, out = 8 + length, {}
        for name, datatype, shape, size in entries:
            chunk = memoryview(raw)[offset:offset + size]
            if len(chunk) != size or not isinstance(name, str):
                return None
            count = math.prod(shape)
            if datatype == "BYTES":
                array = deserialize_bytes(chunk, count, name)
            else:
                array = np.frombuffer(chunk, dtype=DTYPES[datatype]).copy()
            out[name] = array.reshape(shape)
            offset += size
        return out if out and offset == len(raw) else None
    except (ValueError, TypeError, KeyError, BadRequest, struct.error):
        return None
