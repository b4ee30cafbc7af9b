"""The lane: a POST /predict, /models/{model}/predict or Open Inference
Protocol infer (/v2/models/{model}[/versions/{version}]/infer, JSON or
binary tensor data, not compressed) is served from the HTTP protocol's own
callback, as soon as its body is in, without an ASGI cycle or FastAPI's and
Starlette's layers. A hit the in-process cache tier already holds is
answered in that callback, with no await at all; any other such request
(a miss, a flight in the air, a model still loading) is handed to the
dataplane in a task of its own, and its answer or error written when it
comes. When a rate limit applies, the limiter's count is awaited first, in
a task. The answers are exactly the full path's (the same endpoint's body
and headers, the same error bodies, the request id, metrics, access line,
rollout figures and shadow call). Anything the lane does not parse the way
the route would (any refusal before the dataplane, an upload, a query
string, the in-flight cap reached, a larger body) goes down the full path
untouched, as if the lane were not there; a request the lane already
counted against its rate limit is marked so, and not counted twice.
FAST_PATH=false turns it off with the fast path."""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable

import orjson
from fastapi import FastAPI

from router import context
from router.context import REQUEST_ID_HEADER, RequestRecord, accept_request_id
from router.dataplane import tensors
from router.dataplane.cache import LRUCache
from router.edge import bodies
from router.edge.auth import Principal, presented_key
from router.edge.deps import COUNTED  # noqa: F401  (the mark this lane sets)
from router.edge.handlers import error_response
from router.edge.middleware import INTERNAL_ERROR, Edge, error_parts
from router.edge.routes import predictions, v2
from router.edge.schemas import PredictBody, parse
from router.errors import RateLimited, RouterError, is_protocol_path

log = logging.getLogger("router.edge.middleware")  # the full path's unhandled errors are logged there too

# (the record, for the access line and metrics; status; headers; body)
Answer = tuple[RequestRecord, int, list[tuple[bytes, bytes]], bytes]
# what a route's handler found: (body, media type, headers)
Found = tuple[bytes, str, dict[str, str]]


class Pending:
    """A request the lane serves after awaiting the dataplane: its record, and
    the work that finds its answer. It counts as in flight until `later` ends."""

    __slots__ = ("record", "work")

    def __init__(self, record: RequestRecord, work: Callable[[], Awaitable[Found]]) -> None:
        self.record, self.work = record, work

JSON_TYPES = ("application/json", "text/json")


def first_values(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Request headers by lower-case name, the first of a repeated one (as
    Starlette's `Headers.get` reads them), decoded once."""
    out: dict[str, str] = {}
    for name, value in raw:
        out.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return out


def _is_json(content_type: str | None) -> bool:
    """What `bodies.read_fields` reads as JSON (a request without a type included)."""
    ctype = (content_type or "application/json").split(";")[0].strip().lower()
    return ctype in JSON_TYPES or ctype.endswith("+json")


class Lane:
    # Bodies up to this size are held until complete (a text request is far smaller);
    # larger ones start down the full path at once, as they always have.
    MAX_BODY = 64 * 1024
    MEMO_ENTRIES = 4096

    def __init__(self, api: FastAPI, edge: Edge) -> None:
        self.api = api
        self.edge = edge
        self.max_body = min(self.MAX_BODY, edge.max_body)
        self.handlers = {predictions.predict: self._predict, predictions.predict_model: self._predict,
                         v2.infer: self._infer}
        self.routes = [(route.path_regex, route) for route in (*predictions.router.routes, *v2.router.routes)
                       if getattr(route, "endpoint", None) in self.handlers and "POST" in route.methods]
        # /predict and /v2 bodies already parsed (the bytes themselves the key: no two bodies share an entry)
        self.parsed = LRUCache(self.MEMO_ENTRIES, int(api.state.settings.parse_memo_mb * (1 << 20)))

    def takes(self, scope) -> bool:
        """Whether a request may wait for its body to be answered here, from
        its request line and headers alone; marks the route it matched."""
        if scope["method"] != "POST" or scope["query_string"]:
            return False
        for regex, route in self.routes:
            found = regex.match(scope["path"])
            if found is not None:
                break
        else:
            return False
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                return False
        if length is None or not length.isdigit() or not 0 < int(length) <= self.max_body:
            return False
        scope["route"], scope["path_params"] = route, found.groupdict()
        return True

    def answer(self, scope, body: bytes, counted: bool = False) -> Answer | Pending | Principal | None:
        """A cached answer; the Pending work that finds one; None: the full
        path serves it; or the Principal whose rate limit `count` must count
        first (unless already `counted`)."""
        started = time.perf_counter()
        state = self.api.state
        edge = self.edge
        headers = first_values(scope["headers"])
        if edge.in_flight >= edge.max_in_flight:
            return None
        rid = accept_request_id(headers.get(REQUEST_ID_HEADER))
        record, token = context.begin(rid)
        record.started = started
        try:
            try:
                principal = state.keyring.authenticate(presented_key(headers))
                state.keyring.authorize(principal, "predict")
                if not counted and state.limiter.limits(principal):
                    return principal
                found = self.handlers[scope["route"].endpoint](scope, body, headers, record)
            except Exception:  # noqa: BLE001  (refused, or anything else: the full path answers it as it would)
                return None
            if found is None:
                return None
            record.key_name = principal.name
        finally:
            context.end(token)
        if callable(found):
            edge.in_flight += 1
            return Pending(record, found)
        return _ok(record, found)

    async def later(self, scope, pending: Pending) -> Answer:
        """A Pending request's answer: the dataplane's, or its error as the
        full path's handlers (and, for anything unforeseen, its middleware)
        would answer it."""
        record = pending.record
        token = context.attach(record)
        try:
            return _ok(record, await pending.work())
        except RouterError as exc:
            response = error_response(exc, scope["path"])
            return record, response.status_code, [*response.raw_headers, _id(record)], response.body
        except Exception:  # a bug, not a domain error: 500 with the id, the details logged
            log.exception("unhandled error")
            headers, body = error_parts(*INTERNAL_ERROR, record.request_id, protocol=is_protocol_path(scope["path"]))
            return record, 500, [*headers, _id(record)], body
        finally:
            self.edge.in_flight -= 1
            context.end(token)

    def _predict(self, scope, body: bytes, headers: dict[str, str],
                 record: RequestRecord) -> Found | Callable[[], Awaitable[Found]] | None:
        if not _is_json(headers.get("content-type")):
            return None
        settings, rid = self.api.state.settings, record.request_id
        parsed = self._parse_predict(body)
        if parsed is None:
            return None
        predict_body, item = parsed
        opts = bodies.body_options(headers, settings, rid, predict_body, scope["path_params"].get("model"))
        service = self.api.state.service
        prediction = service.cached(item, opts, rid)
        if prediction is None:
            async def predict() -> Found:
                return _prediction(record, await service.predict(item, opts, rid))
            return predict
        return _prediction(record, prediction)

    def _parse_predict(self, body: bytes) -> tuple | None:
        """A /predict body's fields and item, once per distinct text body (the
        item keeps its tensor and cache keys for the next request with that
        body); None when it is not a JSON object. A body the route would refuse
        raises, as it did, and is not kept; nor is an image."""
        key = ("predict", body)
        parsed = self.parsed.lookup(key)
        if parsed is None:
            fields = bodies.parse_json(body, self.api.state.settings.max_json_depth)
            if not isinstance(fields, dict):
                return None
            predict_body = parse(PredictBody, fields)
            parsed = predict_body, bodies.body_item(predict_body)
            if parsed[1].image is None:
                self.parsed.put(key, parsed, float("inf"), 2 * len(body) + 4096)
        return parsed

    def _infer(self, scope, body: bytes, headers: dict[str, str],
               record: RequestRecord) -> Found | Callable[[], Awaitable[Found]] | None:
        if headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            return None
        state, rid, params = self.api.state, record.request_id, scope["path_params"]
        version = tensors.parse_path_version(params.get("version"))
        parsed = self._parse_v2(body, headers.get(v2.HEADER_LENGTH.lower()))
        model, key = params["model"], headers.get("x-user-id") or rid
        served = tensors.cached(state.service, model, version, parsed, key, rid, bodies.PARSE_INLINE_BYTES)
        if served is None:
            async def infer() -> Found:
                return await v2.served_answer(record, model, parsed, await tensors.infer(
                    state.service, model, version, parsed, key, rid))
            return infer
        return v2.answer(record, model, parsed, served)

    def _parse_v2(self, body: bytes, header_length: str | None):
        """`v2.parse`, once per distinct body: a body seen before gets the request
        parsed then, its arrays read-only, so that what one request was given no
        other can change. A body that does not parse raises, as it did, and is
        not kept; nor is one whose parse could outweigh it."""
        key = (body, header_length)
        parsed = self.parsed.lookup(key)
        if parsed is None:
            parsed = v2.parse(body, header_length, self.api.state.settings)
            # Kept when its size is the body and its arrays: not with request parameters, nor BYTES
            # elements (objects each, many times their bytes), which a body can make large.
            if not parsed.parameters and all(t.array.dtype != object for t in parsed.inputs):
                for tensor in parsed.inputs:
                    tensor.array.flags.writeable = False
                self.parsed.put(key, parsed, float("inf"), len(body) + sum(t.array.nbytes for t in parsed.inputs))
        return parsed

    async def count(self, scope, principal: Principal, proxy) -> Answer | None:
        """Counts the request against its principal's rate limit, from the
        client address the app would see (`proxy`: uvicorn's X-Forwarded-For
        handling, when on). None when within the limit; else its 429."""
        started = time.perf_counter()
        self.edge.in_flight += 1
        try:
            return await self._count(scope, principal, proxy, started)
        finally:
            self.edge.in_flight -= 1

    async def _count(self, scope, principal: Principal, proxy, started: float) -> Answer | None:
        if proxy is not None:
            seen = dict(scope)
            await proxy(seen, None, None)
            client = seen.get("client")
        else:
            client = scope.get("client")
        try:
            await self.api.state.limiter.hit(principal, client[0] if client else "unknown")
        except RateLimited as exc:
            record, token = context.begin(accept_request_id(first_values(scope["headers"]).get(REQUEST_ID_HEADER)))
            try:
                record.started, record.key_name = started, principal.name
                response = error_response(exc, scope["path"])
            finally:
                context.end(token)
            return record, response.status_code, [*response.raw_headers,
                                                  (b"x-request-id", record.request_id.encode())], response.body
        return None

    def served(self, scope, record: RequestRecord, status: int) -> None:
        """The answered request's metrics and access line, as the edge records every request."""
        token = context.attach(record)
        try:
            self.edge.record(scope, record, status, time.perf_counter() - record.started)
        finally:
            context.end(token)


def _id(record: RequestRecord) -> tuple[bytes, bytes]:
    return b"x-request-id", record.request_id.encode()


def _ok(record: RequestRecord, found: Found) -> Answer:
    """A route's 200, as its Response would be written, with the request id the edge adds."""
    content, media_type, extra = found
    return record, 200, [*((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()),
                         (b"content-length", str(len(content)).encode()), (b"content-type", media_type.encode()),
                         _id(record)], content


def _prediction(record: RequestRecord, prediction) -> Found:
    payload, extra = predictions.answer(record, [prediction])
    return orjson.dumps(payload), "application/json", extra
