"""The access line written straight to the JSON handler's buffer is the line
the logging path writes, and any other configuration takes the logging path."""

from __future__ import annotations

import io
import json
import logging

import pytest

from router import context, logs

FIELDS = {"method": "POST", "path": "/predict", "status": 200, "latency_ms": 0.21, "model": "sentiment",
          "version": 2, "routed_by": "canary", "cache": "HIT", "key": None}


@pytest.fixture
def configured():
    """The router's own logging, its handler's stream captured; the root's handlers restored after."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    logs.configure_logging("INFO", True)
    handler = root.handlers[0]
    handler.stream = io.BytesIO()
    try:
        yield handler
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def lines(handler) -> list[dict]:
    out = [json.loads(line) for line in handler.stream.getvalue().decode().splitlines()]
    handler.stream.seek(0)
    handler.stream.truncate()
    return out


def test_the_direct_line_is_the_logged_line(configured):
    logging.getLogger().handlers[:] = [configured]  # without the test runner's own capture
    access = logs.AccessLog("router.access")
    assert access._direct() is configured
    _, token = context.begin("rid-direct")
    try:
        access.info("POST /predict 200", FIELDS)
        direct = lines(configured)
        access._direct = lambda: None  # the logging module's path, through the same handler
        access.info("POST /predict 200", FIELDS)
        logged = lines(configured)
    finally:
        context.end(token)
    assert len(direct) == len(logged) == 1
    assert list(direct[0]) == list(logged[0])  # the same keys in the same order
    assert direct[0].pop("ts")[:16] == logged[0].pop("ts")[:16] and direct == logged
    assert direct[0]["request_id"] == "rid-direct" and direct[0]["routed_by"] == "canary"


def test_a_capture_or_a_level_sends_lines_through_logging(configured, caplog):
    access = logs.AccessLog("router.access")
    with caplog.at_level(logging.INFO, logger="router.access"):
        assert access._direct() is None  # a second handler on the root
        access.info("POST /predict 200", FIELDS)
    assert [r.cache for r in caplog.records if r.name == "router.access"] == ["HIT"]
    lines(configured)
    logging.getLogger().handlers[:] = [configured]
    logging.getLogger("router.access").setLevel(logging.WARNING)
    try:
        access.info("POST /predict 200", FIELDS)
        assert access._direct() is None and lines(configured) == []
    finally:
        logging.getLogger("router.access").setLevel(logging.NOTSET)


def test_a_request_line_is_the_line_info_writes_on_either_path(configured):
    logging.getLogger().handlers[:] = [configured]
    access = logs.AccessLog("router.access")
    shapes = [dict(FIELDS), dict(FIELDS, path='/models/"odd\\ü"/predict', status=404, model=None, version=None,
                                 routed_by=None, cache=None, latency_ms=12.5, key="k-1")]
    _, token = context.begin("rid-request")
    try:
        for fields in shapes * 2:  # each shape made once, then spliced
            access.request("rid-request", fields["method"], fields["path"], fields["status"], fields["latency_ms"],
                           fields["model"], fields["version"], fields["routed_by"], fields["cache"], fields["key"])
        direct = lines(configured)
        access._direct = lambda: None
        for fields in shapes:
            access.info(f"{fields['method']} {fields['path']} {fields['status']}", fields)
        logged = lines(configured)
    finally:
        context.end(token)
    assert len(direct) == 4 and len(logged) == 2
    for mine, theirs in zip(direct, [dict(line) for line in logged * 2]):
        assert list(mine) == list(theirs)  # the same keys in the same order
        assert mine.pop("ts")[:16] == theirs.pop("ts")[:16] and mine == theirs
    assert len(access._shapes) == 2
