"""The per-request record: made at the edge (or by a worker for a job), kept
in one contextvar, filled from the dataplane's result. Its request id is the
only one: log lines, error bodies and Triton calls all read it from here."""

from __future__ import annotations

import os
import re
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,%d}" % (MAX_REQUEST_ID_LENGTH - 1))


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    version: int | None = None
    routed_by: str | None = None
    cache: str | None = None  # HIT | MISS
    key_name: str | None = None  # the API key's name; None for an anonymous request

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def served(self, model: str, version: int, routed_by: str, hit: bool) -> None:
        self.model, self.version, self.routed_by = model, version, routed_by
        self.cache = "HIT" if hit else "MISS"


_current: ContextVar[RequestRecord | None] = ContextVar("request_record", default=None)


_random = bytearray()  # from os.urandom, 4 KiB at a time: one system call per 256 ids
_random_lock = threading.Lock()
os.register_at_fork(after_in_child=_random.clear)  # a forked worker never repeats its parent's ids


def new_request_id() -> str:
    """32 random hex digits from the kernel's generator (uuid4's form without its
    version bits), drawn in blocks: a system call costs several microseconds here."""
    with _random_lock:
        if not _random:
            _random.extend(os.urandom(4096))
        chunk = _random[-16:]
        del _random[-16:]
    return chunk.hex()


def accept_request_id(candidate: str | None) -> str:
    """The client's id when it is sane (1-128 of A-Z a-z 0-9 . _ : -,
    starting with a letter or digit), else a fresh one."""
    if candidate and _SANE.fullmatch(candidate):
        return candidate
    return new_request_id()


def begin(request_id: str):
    """Make the record current; returns it and the token that `end` takes."""
    record = RequestRecord(request_id)
    return record, _current.set(record)


def attach(record: RequestRecord):
    """Make an existing record current again; returns the token that `end` takes."""
    return _current.set(record)


def end(token) -> None:
    _current.reset(token)


def current() -> RequestRecord | None:
    return _current.get()


def current_request_id() -> str | None:
    record = _current.get()
    return record.request_id if record is not None else None
