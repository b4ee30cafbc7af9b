"""The edge of every request: its id, the in-flight cap, the body limit,
one log line, metrics."""

from __future__ import annotations

import json
import logging
import time

from router import context
from router.context import REQUEST_ID_HEADER, RequestRecord, accept_request_id
from router.errors import PayloadTooLarge, error_body
from router.metrics import Metrics

log = logging.getLogger("router.access")


class EdgeMiddleware:
    """Pure ASGI (no per-request task switch): makes the request's record
    (accepting or making its id), sheds load beyond `max_in_flight` requests
    with 503 and Retry-After (probes exempt, so a busy router is not taken
    for a dead one), refuses bodies over the limit with 413, adds
    X-Request-ID to every response, and records the outcome (from the record
    the routes filled) once the response is sent."""

    EXEMPT = frozenset({"/ping", "/health", "/ready"})

    def __init__(self, app, max_body_bytes: int, metrics: Metrics, request_logging: bool = True,
                 max_in_flight: int = 512) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.metrics = metrics
        self.request_logging = request_logging
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        rid = accept_request_id(headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1"))
        record, token = context.begin(rid)
        status: dict = {"code": 500}
        rid_header = (b"x-request-id", rid.encode())

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        admitted = False
        try:
            if scope["path"] not in self.EXEMPT:
                if self.in_flight >= self.max_in_flight:
                    self.metrics.rejected.labels("overloaded").inc()
                    return await self._send_error(send_with_id, 503, "overloaded",
                                                  f"the router is serving {self.max_in_flight} requests at once; "
                                                  "retry shortly", rid, [(b"retry-after", b"1")])
                self.in_flight += 1
                admitted = True
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                return await self._reject(send_with_id, rid)
            await self.app(scope, self._limited(receive), send_with_id)
        except Exception:  # a bug, not a domain error: answer 500 with the id, log the details
            log.exception("unhandled error")
            if status.get("started"):
                raise
            status["code"] = 500
            await self._send_error(send_with_id, 500, "internal_error",
                                   "internal error; see the router log for this request id", rid)
        finally:
            if admitted:
                self.in_flight -= 1
            self._record(scope, record, status["code"], time.perf_counter() - record.started)
            context.end(token)

    def _limited(self, receive):
        seen = 0

        async def wrapped():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise PayloadTooLarge(f"request body is larger than {self.max_body} bytes")
            return message
        return wrapped

    async def _reject(self, send, rid: str) -> None:
        await self._send_error(send, 413, "payload_too_large", f"request body is larger than {self.max_body} bytes",
                               rid)

    @staticmethod
    async def _send_error(send, status: int, code: str, message: str, rid: str,
                          extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = json.dumps(error_body(code, message, rid), separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                *(extra or [])]})
        await send({"type": "http.response.body", "body": body})

    def _record(self, scope, record: RequestRecord, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        version = "" if record.version is None else str(record.version)
        self.metrics.observe_request(path, record.model, version, status, seconds)
        if self.request_logging:
            log.info("%s %s %d", scope["method"], scope["path"], status, extra={
                "method": scope["method"], "path": scope["path"], "status": status,
                "latency_ms": round(seconds * 1000, 3), "model": record.model or None,
                "version": record.version, "routed_by": record.routed_by, "cache": record.cache,
                "key": record.key_name,
            })
