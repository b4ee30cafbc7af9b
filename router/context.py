"""The request id: accepted or made at the edge, kept in a contextvar."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128
_SANE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,%d}" % (MAX_REQUEST_ID_LENGTH - 1))

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def new_request_id() -> str:
    return uuid.uuid4().hex


def accept_request_id(candidate: str | None) -> str:
    """The client's id when it is sane (1-128 of A-Z a-z 0-9 . _ : -,
    starting with a letter or digit), else a fresh one."""
    if candidate and _SANE.fullmatch(candidate):
        return candidate
    return new_request_id()


def current_request_id() -> str | None:
    return request_id_var.get()
