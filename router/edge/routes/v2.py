"""The Open Inference Protocol (KServe v2) over HTTP, as Triton speaks it, so
that an unmodified `tritonclient.http` client works against the router: server
metadata and health, and per model its metadata, readiness, config and
inference (JSON or binary tensor data, with classification), routed, cached
and coalesced like /predict. Triton's other APIs (repository, shared memory,
trace, logging, statistics) have no route here: 404.

Errors on these routes take the protocol's shape, `{"error": "message"}`
(see `protocol_error`), with the request id in X-Request-ID. The routes are
left out of the OpenAPI document: KServe and Triton document the protocol."""

from __future__ import annotations

import asyncio
import zlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from router.dataplane import protocol, tensors
from router.context import RequestRecord
from router.edge import bodies
from router.edge.deps import RecordDep, ServiceDep, SettingsDep, require
from router.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, protocol_error
from router.settings import Settings

router = APIRouter(tags=["v2"], include_in_schema=False)
PREDICT = [require("predict")]
EXTENSIONS = ["classification", "binary_tensor_data", "model_configuration"]
HEADER_LENGTH = "Inference-Header-Content-Length"


# --- the server ------------------------------------------------------------------

@router.get("/v2")
async def server_metadata(request: Request):
    return {"name": "triton-canary-router", "version": request.app.version, "extensions": EXTENSIONS}


@router.get("/v2/health/live")
async def live():
    return Response(status_code=200)


@router.get("/v2/health/ready")
async def ready(service: ServiceDep):
    if service.readiness()["ready"]:
        return Response(status_code=200)
    return JSONResponse(protocol_error("the router is not ready: see GET /ready"), status_code=503)


# --- models ------------------------------------------------------------------------

def _model_routes(suffix: str, method: str = "GET"):
    """Register a handler on /v2/models/{model}<suffix> and on its /versions/{version} twin."""

    def register(handler):
        for path in (f"/v2/models/{{model}}{suffix}", f"/v2/models/{{model}}/versions/{{version}}{suffix}"):
            router.add_api_route(path, handler, methods=[method], dependencies=PREDICT)
        return handler
    return register


def _version(request: Request) -> int | None:
    return tensors.parse_path_version(request.path_params.get("version"))


@_model_routes("")
async def model_metadata(model: str, request: Request, service: ServiceDep):
    return await tensors.model_view(service, model, _version(request), "metadata")


@_model_routes("/config")
async def model_config(model: str, request: Request, service: ServiceDep):
    return await tensors.model_view(service, model, _version(request), "config")


@_model_routes("/ready")
async def model_ready(model: str, request: Request, service: ServiceDep):
    """200 when ready; 400 when not, as Triton answers."""
    version = _version(request)
    if await tensors.model_ready(service, model, version):
        return Response(status_code=200)
    what = f"'{model}'" + (f" version {version}" if version is not None else "")
    return JSONResponse(protocol_error(f"model {what} is not ready"), status_code=400)


@_model_routes("/infer", method="POST")
async def infer(model: str, request: Request, service: ServiceDep, settings: SettingsDep, record: RecordDep):
    version = _version(request)
    raw = await _read_body(request, settings)
    header_length = request.headers.get(HEADER_LENGTH)
    if len(raw) > bodies.PARSE_INLINE_BYTES:
        parsed = await asyncio.to_thread(parse, raw, header_length, settings)
    else:
        parsed = parse(raw, header_length, settings)
    key = request.headers.get("x-user-id") or record.request_id
    body, media_type, headers = await served_answer(record, model, parsed, await tensors.infer(
        service, model, version, parsed, key, record.request_id))
    return Response(body, media_type=media_type, headers=headers)


async def served_answer(record: RequestRecord, model: str, parsed: protocol.InferRequest,
                        served: tensors.Served) -> tuple[bytes, str, dict[str, str]]:
    """`answer`, encoded off the event loop when the outputs are large."""
    if sum(a.nbytes for a in served.outputs.values()) > bodies.PARSE_INLINE_BYTES:
        return await asyncio.to_thread(answer, record, model, parsed, served)
    return answer(record, model, parsed, served)


def answer(record: RequestRecord, model: str, parsed: protocol.InferRequest,
           served: tensors.Served) -> tuple[bytes, str, dict[str, str]]:
    """The response's body, media type and headers, with the record filled for the edge's log line and metrics."""
    record.served(model, served.version, served.routed_by, served.cached)
    body, json_length = protocol.encode_response(model, served.version, parsed, served.outputs)
    headers = {"X-Model-Version": str(served.version), "X-Cache": record.cache or "MISS",
               "X-Routed-By": served.routed_by}
    if json_length is None:
        return body, "application/json", headers
    return body, "application/octet-stream", {**headers, HEADER_LENGTH: str(json_length)}


# --- request bodies ----------------------------------------------------------------

async def _read_body(request: Request, settings: Settings) -> bytes:
    raw = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("gzip", "deflate"):
        if len(raw) > bodies.PARSE_INLINE_BYTES:
            raw = await asyncio.to_thread(_inflate, raw, encoding, settings.max_body_bytes)
        else:
            raw = _inflate(raw, encoding, settings.max_body_bytes)
    elif encoding not in ("", "identity"):
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or none")
    if not raw:
        raise BadRequest("the request body is empty; send an inference request")
    return raw


def _inflate(raw: bytes, encoding: str, limit: int) -> bytes:
    """A compressed body, inflated to at most `limit` bytes."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error:
        raise BadRequest(f"the request body is not valid {encoding} data") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes once inflated")
    if not inflater.eof or inflater.unused_data:  # truncated, or more than one stream
        raise BadRequest(f"the request body is not valid {encoding} data")
    return out


def parse(raw: bytes, header_length: str | None, settings: Settings) -> protocol.InferRequest:
    """The JSON header (all of the body, or its first Inference-Header-Content-Length
    bytes) and the binary tensors after it."""
    length = len(raw)
    if header_length is not None:
        text = header_length.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 19) or int(text) > len(raw):
            raise BadRequest(f"{HEADER_LENGTH} must be a byte count within the body ({len(raw)} bytes)")
        length = int(text)
    header = bodies.parse_json(raw[:length], settings.max_json_depth)
    return protocol.decode_request(header, memoryview(raw)[length:], settings.v2_max_inputs,
                                   settings.v2_max_elements)
