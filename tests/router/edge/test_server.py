"""The server's coalescing transport: pure logic over a small recording transport."""

from __future__ import annotations

import asyncio

from router.edge.server import CoalescingTransport


class Recording:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default


def test_writes_of_one_turn_go_out_as_one_and_in_order():
    async def scenario():
        raw = Recording()
        t = CoalescingTransport(raw, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"body")
        assert raw.writes == []  # not yet: at the end of this turn
        await asyncio.sleep(0)
        t.write(b"next")
        await asyncio.sleep(0)
        return raw.writes, t.get_extra_info("peername")

    writes, peer = asyncio.run(scenario())
    assert writes == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"next"] and peer == ("127.0.0.1", 1)


def test_close_writes_what_is_pending_and_abort_drops_it():
    async def scenario():
        closed, aborted = Recording(), Recording()
        a = CoalescingTransport(closed, asyncio.get_running_loop())
        a.write(b"last words")
        a.close()
        b = CoalescingTransport(aborted, asyncio.get_running_loop())
        b.write(b"never sent")
        b.abort()
        await asyncio.sleep(0)
        return closed, aborted

    closed, aborted = asyncio.run(scenario())
    assert closed.writes == [b"last words"] and closed.closed
    assert aborted.writes == [] and aborted.aborted
