"""The edge of every request: its id, the in-flight cap, the body limit,
one log line, metrics."""

from __future__ import annotations

import json
import logging
import time

from starlette.requests import ClientDisconnect

from router import context
from router.context import REQUEST_ID_HEADER, RequestRecord, accept_request_id
from router.errors import Overloaded, PayloadTooLarge, error_body, is_protocol_path, protocol_error
from router.logs import AccessLog
from router.metrics import Metrics

log = logging.getLogger("router.access")
access = AccessLog("router.access")


class Edge:
    """What the edge keeps across requests, shared by the middleware and the
    protocol's lane (router/edge/lane.py): the limits, the count of
    requests in flight, and how an outcome is recorded."""

    EXEMPT = frozenset({"/ping", "/health", "/ready", "/v2/health/live", "/v2/health/ready"})

    def __init__(self, max_body_bytes: int, metrics: Metrics, request_logging: bool = True,
                 max_in_flight: int = 512) -> None:
        self.max_body = max_body_bytes
        self.metrics = metrics
        self.request_logging = request_logging
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def record(self, scope, record: RequestRecord, status: int, seconds: float) -> None:
        """One request's metrics and access line, from the record the routes filled."""
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        version = "" if record.version is None else str(record.version)
        self.metrics.observe_request(path, record.model, version, status, seconds)
        if self.request_logging:
            access.request(record.request_id, scope["method"], scope["path"], status, round(seconds * 1000, 3),
                           record.model or None, record.version, record.routed_by, record.cache, record.key_name)


class EdgeMiddleware:
    """Pure ASGI (no per-request task switch): makes the request's record
    (accepting or making its id), sheds load beyond `max_in_flight` requests
    with 503 and Retry-After (probes exempt, so a busy router is not taken
    for a dead one), refuses bodies over the limit with 413, adds
    X-Request-ID to every response, and records the outcome (from the record
    the routes filled) once the response is sent."""

    def __init__(self, app, edge: Edge) -> None:
        self.app = app
        self.edge = edge
        self.max_body = edge.max_body
        self.metrics = edge.metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        rid = accept_request_id(headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1"))
        record, token = context.begin(rid)
        status: dict = {"code": 500}
        rid_header = (b"x-request-id", rid.encode())
        protocol = is_protocol_path(scope["path"])  # errors in the Open Inference Protocol's shape

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        # A request counts against the in-flight cap once its body has arrived (at once
        # when it has none): a client sending a body slowly holds a connection, not a slot.
        admitted = {"yes": False}

        def admit() -> None:
            edge = self.edge
            if edge.in_flight >= edge.max_in_flight:
                self.metrics.rejected.labels("overloaded").inc()
                raise Overloaded(f"the router is serving {edge.max_in_flight} requests at once; retry shortly",
                                 {"Retry-After": "1"})
            edge.in_flight += 1
            admitted["yes"] = True

        try:
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return await self._reject(send_with_id, rid, protocol)
            counted = scope["path"] not in self.edge.EXEMPT
            if counted and length in (None, b"0") and b"transfer-encoding" not in headers:
                try:
                    admit()
                except Overloaded as exc:
                    return await self._send_error(send_with_id, 503, exc.code, exc.message, rid,
                                                  [(b"retry-after", b"1")], protocol)
            pending = admit if counted and not admitted["yes"] else None
            await self.app(scope, self._limited(receive, pending), send_with_id)
        except ClientDisconnect:  # the client went away (or its body timed out: the server answered 408)
            status["code"] = 499
        except Exception:  # a bug, not a domain error: answer 500 with the id, log the details
            log.exception("unhandled error")
            if status.get("started"):
                raise
            status["code"] = 500
            await self._send_error(send_with_id, 500, *INTERNAL_ERROR, rid, protocol=protocol)
        finally:
            if admitted["yes"]:
                self.edge.in_flight -= 1
            self.edge.record(scope, record, status["code"], time.perf_counter() - record.started)
            context.end(token)

    def _limited(self, receive, on_complete=None):
        """`receive` that refuses a body over the limit, and calls `on_complete`
        once the whole body has arrived."""
        seen = 0

        async def wrapped():
            nonlocal seen, on_complete
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise PayloadTooLarge(f"request body is larger than {self.max_body} bytes")
                if on_complete is not None and not message.get("more_body", False):
                    complete, on_complete = on_complete, None
                    complete()
            return message
        return wrapped

    async def _reject(self, send, rid: str, protocol: bool = False) -> None:
        await self._send_error(send, 413, "payload_too_large", f"request body is larger than {self.max_body} bytes",
                               rid, protocol=protocol)

    @staticmethod
    async def _send_error(send, status: int, code: str, message: str, rid: str,
                          extra: list[tuple[bytes, bytes]] | None = None, protocol: bool = False) -> None:
        headers, body = error_parts(code, message, rid, extra, protocol)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


INTERNAL_ERROR = ("internal_error", "internal error; see the router log for this request id")


def error_parts(code: str, message: str, rid: str, extra: list[tuple[bytes, bytes]] | None = None,
                protocol: bool = False) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers (without the request id's) and body of an error the edge answers itself."""
    shape = protocol_error(message) if protocol else error_body(code, message, rid)
    body = json.dumps(shape, separators=(",", ":")).encode()
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])], body
