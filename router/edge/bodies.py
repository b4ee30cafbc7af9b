"""A prediction request (JSON, multipart or query string) -> items and options.
Shared by /predict, /predict/batch and /jobs, so all accept the same bodies."""

from __future__ import annotations

import asyncio
from typing import Mapping

import orjson
from fastapi import Request

from router.dataplane.preprocess import decode_b64
from router.dataplane.types import Item, Options
from router.edge.schemas import BatchBody, PredictBody, parse
from router.errors import BadRequest, InvalidInput, UnsupportedMediaType
from router.settings import Settings, parse_version


def _int_field(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"{name}: must be an integer") from None


# Bodies larger than this are parsed in a worker thread, off the event loop.
PARSE_INLINE_BYTES = 64 * 1024


def parse_json(raw: bytes, max_depth: int) -> object:
    """orjson's strict parse (it refuses lone surrogates and invalid UTF-8),
    then a walk that refuses nesting deeper than `max_depth`."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc).lower():
            raise BadRequest(f"the JSON body is nested deeper than {max_depth} levels") from None
        raise BadRequest("the request body is not valid JSON") from None
    if raw.count(b"[") + raw.count(b"{") <= max_depth:  # not even that many openings: no walk needed
        return value
    level = [value] if isinstance(value, (dict, list)) else []
    for depth in range(1, max_depth + 2):
        nested = [c for v in level for c in (v.values() if isinstance(v, dict) else v)
                  if isinstance(c, (dict, list))] if level else []
        if not nested:
            return value
        if depth >= max_depth:
            raise BadRequest(f"the JSON body is nested deeper than {max_depth} levels")
        level = nested
    return value


async def read_json_object(request: Request, max_depth: int) -> dict:
    raw = await request.body()
    if not raw:
        raise BadRequest("the request body is empty; send JSON or a multipart upload")
    if len(raw) > PARSE_INLINE_BYTES:
        fields = await asyncio.to_thread(parse_json, raw, max_depth)
    else:
        fields = parse_json(raw, max_depth)
    if not isinstance(fields, dict):
        raise InvalidInput("the JSON body must be an object")
    return fields


async def read_fields(request: Request, max_json_depth: int) -> tuple[dict, bytes | None]:
    """The body's fields (JSON object or form) and an uploaded `file`, with
    `model`, `model_version` and `top_k` also taken from the query string."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    upload = None
    if ctype == "multipart/form-data":
        form = await request.form()
        fields: dict = {k: v for k, v in form.items() if isinstance(v, str)}
        file = form.get("file")
        if file is not None and not isinstance(file, str):
            upload = await file.read()
        if "top_k" in fields:
            fields["top_k"] = _int_field("top_k", fields["top_k"])
    elif ctype in ("application/json", "text/json") or ctype.endswith("+json"):
        fields = await read_json_object(request, max_json_depth)
    else:
        raise UnsupportedMediaType(f"unsupported content type {ctype!r}; send application/json or multipart/form-data")
    for key in ("model", "model_version", "top_k"):
        if fields.get(key) is None and key in request.query_params:
            value = request.query_params[key]
            fields[key] = _int_field(key, value) if key == "top_k" else value
    return fields, upload


def options(headers: Mapping[str, str], settings: Settings, request_id: str, model: str | None, version,
            top_k: int | None) -> Options:
    """Canary routing is sticky per X-User-ID (in the request's `headers`), else per request id."""
    try:
        requested = parse_version(version)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    key = headers.get("x-user-id") or request_id
    return Options(model=model or settings.default_model, requested_version=requested, top_k=top_k or 1,
                   routing_key=key)


def item(text: str | None, image_b64: str | None, upload: bytes | None = None) -> Item:
    if upload is not None:
        return Item(image=upload)
    if image_b64 is not None:
        return Item(image=decode_b64(image_b64))
    return Item(text=text)


def single(headers: Mapping[str, str], settings: Settings, request_id: str, fields: dict, upload: bytes | None,
           path_model: str | None = None) -> tuple[list[Item], Options]:
    body = parse(PredictBody, fields)
    return [body_item(body, upload)], body_options(headers, settings, request_id, body, path_model)


def body_item(body: PredictBody, upload: bytes | None = None) -> Item:
    return item(body.text if body.text is not None else body.input, body.image_b64, upload)


def body_options(headers: Mapping[str, str], settings: Settings, request_id: str, body: PredictBody,
                 path_model: str | None = None) -> Options:
    return options(headers, settings, request_id, path_model or body.model, body.model_version, body.top_k)


def batch(headers: Mapping[str, str], settings: Settings, request_id: str, fields: dict) -> tuple[list[Item], Options]:
    body = parse(BatchBody, fields)
    if not body.inputs:
        raise InvalidInput("inputs must hold at least one item")
    if len(body.inputs) > settings.max_batch_items:
        raise InvalidInput(f"inputs holds {len(body.inputs)} items; at most {settings.max_batch_items} are accepted")
    items = [Item(text=i) if isinstance(i, str) else item(i.text if i.text is not None else i.input, i.image_b64)
             for i in body.inputs]
    return items, options(headers, settings, request_id, body.model, body.model_version, body.top_k)
