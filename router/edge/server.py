"""The HTTP server's own limits, where uvicorn has no setting for them: a cap
on the size of the request line and headers (431) and timeouts for reading
the headers and the body (408). A subclass of uvicorn's httptools protocol,
so everything else is uvicorn's own; each refusal is the one error body with
a fresh request id, and the connection is closed after it."""

from __future__ import annotations

import asyncio
import json

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from router.context import new_request_id
from router.edge.auth import Principal
from router.edge.deps import COUNTED
from router.edge.lane import Pending
from router.errors import error_body
from router.settings import Settings


class CoalescingTransport:
    """A transport whose writes made in one event-loop turn go out as one:
    uvicorn writes a response's headers and its body separately, two system
    calls where one does. Everything else is the wrapped transport's; closing
    writes what is pending first, aborting drops it."""

    __slots__ = ("_transport", "_pending", "_loop")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = loop

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def write_now(self, data: bytes) -> None:
        """`data` written at once, after anything pending (a whole response needs no coalescing)."""
        self._flush()
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits `configure` sets (each
    worker process calls it from its app factory before serving)."""

    max_header_bytes = 16_384
    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self._lane = find_lane(self.app)
        self._held = None  # a request waiting for its body, to be answered by the lane or else the app
        self._in_headers = False
        self._header_bytes = 0  # exact: the request line and headers of this request, as parsed
        self._raw_bytes = 0  # a backstop: bytes received while a header is still incomplete
        self._reading_headers = True
        self._refusal: tuple[int, str, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._arm(self.header_timeout_s, "the request headers were not received in time")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._held = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_headers:
            self._raw_bytes += len(data)
        super().data_received(data)
        # One header can arrive in many pieces before the parser reports it: bound what is buffered meanwhile.
        if self._reading_headers and self._raw_bytes > 2 * self.max_header_bytes + 65536 \
                and not self.transport.is_closing():
            self._refuse(*self._too_large())

    def _too_large(self) -> tuple[int, str, str]:
        return 431, "headers_too_large", f"the request line and headers are larger than {self.max_header_bytes} bytes"

    def _count(self, size: int) -> None:
        """Raising here stops the parser; uvicorn then calls send_400_response, which answers the refusal."""
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._refusal = self._too_large()
            raise ValueError("headers too large")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def send_400_response(self, msg: str) -> None:
        """Malformed HTTP, or a refusal raised from a parser callback: the one error body."""
        self._refuse(*(self._refusal or (400, "bad_request", "the request is not valid HTTP/1.1")))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        if not self._reading_headers:  # the next request on a kept-alive connection
            self._reading_headers, self._raw_bytes = True, 0
            self._arm(self.header_timeout_s, "the request headers were not received in time")

    def on_headers_complete(self) -> None:
        self._reading_headers = False
        self._disarm()
        self._in_headers = True
        try:
            super().on_headers_complete()
        finally:
            self._in_headers = False
        if self.cycle is not None and self.cycle.more_body and self._expects_body():
            self._arm(self.body_timeout_s, "the request body was not received in time")

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()
        cycle, self._held = self._held, None
        if cycle is not None and cycle is self.cycle and not cycle.disconnected:
            answered = self._lane.answer(cycle.scope, bytes(cycle.body))
            if isinstance(answered, Principal):  # a rate limit to count first: one await, in a task
                task = self.loop.create_task(self._answer_limited(cycle, answered))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
            else:
                self._answer_or_start(cycle, answered)

    async def _answer_limited(self, cycle, principal: Principal) -> None:
        refusal = await self._lane.count(cycle.scope, principal, self._proxy())
        if cycle.disconnected or self.transport.is_closing():
            return
        if refusal is None:
            cycle.scope[COUNTED] = True
        self._answer_or_start(cycle, refusal or self._lane.answer(cycle.scope, bytes(cycle.body), counted=True))

    def _answer_or_start(self, cycle, answered) -> None:
        if answered is None:
            super()._start_asgi_task(cycle, self.app)
        elif isinstance(answered, Pending):
            task = self.loop.create_task(self._answer_later(cycle, answered))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
        else:
            self._write_answer(cycle, *answered)

    async def _answer_later(self, cycle, pending: Pending) -> None:
        """The lane's answer once the dataplane has it; a client gone meanwhile
        gets nothing written, and the request is recorded all the same."""
        answer = await self._lane.later(cycle.scope, pending)
        if cycle.disconnected or self.transport.is_closing():
            self._lane.served(cycle.scope, answer[0], answer[1])
        else:
            self._write_answer(cycle, *answer)

    def _proxy(self):
        """uvicorn's X-Forwarded-For handling, when on, over no app: what it makes of a scope."""
        if not self.config.proxy_headers:
            return None
        proxy = getattr(type(self), "_proxy_headers", None)
        if proxy is None:
            async def nothing(scope, receive, send) -> None:
                return None
            proxy = ProxyHeadersMiddleware(nothing, trusted_hosts=self.config.forwarded_allow_ips)
            type(self)._proxy_headers = proxy
        return proxy

    def _start_asgi_task(self, cycle, app) -> None:
        """A request the lane may answer waits for its body (bounded by the
        lane) instead of starting the app at once; every other starts as usual."""
        if self._in_headers and self._lane is not None and app is self.app and not cycle.waiting_for_100_continue \
                and self._lane.takes(cycle.scope):
            self._held = cycle
            return
        super()._start_asgi_task(cycle, app)

    def _write_answer(self, cycle, record, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """A whole response written at once, as uvicorn's cycle writes one (its
        default headers, `connection: close` when not kept alive), then done."""
        content = [STATUS_LINE[status]]
        for name, value in (*self.server_state.default_headers, *headers):
            content += [name, b": ", value, b"\r\n"]
        if not cycle.keep_alive:
            content.append(b"connection: close\r\n")
        content += [b"\r\n", body]
        self.transport.write_now(b"".join(content))
        cycle.response_started = cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            self.transport.close()
        self._lane.served(cycle.scope, record, status)
        cycle.on_response()

    def _expects_body(self) -> bool:
        headers = dict(self.headers)
        length = headers.get(b"content-length")
        return b"transfer-encoding" in headers or (length is not None and length.strip() not in (b"", b"0"))

    def _arm(self, seconds: float, message: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._refuse, 408, "request_timeout", message)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer `status` unless a response has begun, then close the connection."""
        self._timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        # a finished cycle is the previous request's, on a kept-alive connection
        started = cycle is not None and cycle.response_started and not cycle.response_complete
        if cycle is not None:  # the app, if it runs, sees a disconnect and writes nothing more
            cycle.disconnected = True
            cycle.message_event.set()
        if not started:
            rid = new_request_id()
            body = json.dumps(error_body(code, message, rid), separators=(",", ":")).encode()
            self.transport.write(b"".join([
                STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: ", str(len(body)).encode(), b"\r\n",
                b"x-request-id: ", rid.encode(), b"\r\nconnection: close\r\n\r\n", body]))
        self.transport.close()


def find_lane(app):
    """The lane of the app under uvicorn's wrappers (None when it has none)."""
    for _ in range(8):
        lane = getattr(getattr(app, "state", None), "lane", None)
        if lane is not None or not hasattr(app, "app"):
            return lane
        app = app.app
    return None


PROTOCOL = f"{__name__}:GuardedHttpToolsProtocol"  # for uvicorn's `http=` with several workers


def configure(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    cls = GuardedHttpToolsProtocol
    cls.max_header_bytes, cls.header_timeout_s = settings.max_header_bytes, settings.header_timeout_s
    cls.body_timeout_s = settings.body_timeout_s
    return cls
