"""Logging configured once: JSON lines carrying the request id."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time

import orjson

from router.context import current_request_id

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = current_request_id()
        return True


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, and its text: replaced whole


def _second_text(second: int) -> str:
    """The second's text, made once per second (read whole, once: other threads log too)."""
    global _second
    known = _second
    if known[0] != second:
        known = _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return known[1]


def timestamp(created: float, msecs: float) -> str:
    """ISO 8601 in UTC with milliseconds."""
    return f"{_second_text(int(created))}.{int(msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": timestamp(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class BufferedStderr(logging.StreamHandler):
    """Lines written to stderr in blocks rather than one write each, through
    a binary buffer (whose own lock makes each write whole): an access line
    (one per request) costs a buffered write of the bytes orjson made, not
    a system call, a decode or this handler's lock. A daemon thread writes
    what has gathered every `every_s`; every other line, the app's shutdown
    and the interpreter's exit write at once."""

    def __init__(self, every_s: float = 0.2) -> None:
        super().__init__(open(os.dup(sys.stderr.fileno()), "wb", buffering=1 << 16))
        self.every_s = every_s
        self._flusher = threading.Thread(target=self._run, name="log-flusher", daemon=True)
        self._flusher.start()
        atexit.register(self.flush_now)

    def flush(self) -> None:  # Handler.close and others call this: the buffer decides instead
        pass

    def flush_now(self) -> None:
        with self.lock:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def write_line(self, line: bytes) -> None:
        """A line, as UTF-8 bytes ending in a newline."""
        try:
            self.stream.write(line)
        except (OSError, ValueError):
            pass

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write((self.format(record) + "\n").encode("utf-8", "backslashreplace"))
        except (OSError, ValueError):
            pass
        except Exception:  # noqa: BLE001  (a formatting error: reported as logging reports them)
            self.handleError(record)
        if not record.name.startswith("router.access") or record.levelno >= logging.WARNING:
            self.flush_now()

    def _run(self) -> None:
        while True:
            time.sleep(self.every_s)
            self.flush_now()


class AccessLog:
    """An info line per request, with `fields` as the line's extra keys. When
    the logger's records can only reach the JSON handler `configure_logging`
    installs (no handler, filter or level of its own, nothing else on the
    root), the line that handler would write is written to its buffer
    directly, without a LogRecord, a filter or a formatter call per request;
    otherwise (a test's capture, another handler, plain text) it is logged
    as usual. Either way the line is the same."""

    MAX_SHAPES = 4096  # the lines' JSON kept per shape (method, path, status, model...): then made afresh

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self._head = f'{{"ts":"%s.%03dZ","level":"info","logger":{orjson.dumps(name).decode()},'
        self._shapes: dict[tuple, tuple[bytes, bytes, bytes]] = {}
        self._stamp: tuple[int, bytes] = (-1, b"")

    def _direct(self) -> BufferedStderr | None:
        logger, root = self.logger, logging.getLogger()
        if logger.handlers or logger.filters or not logger.propagate or logger.disabled or len(root.handlers) != 1:
            return None
        handler = root.handlers[0]
        if type(handler) is not BufferedStderr or type(handler.formatter) is not JsonFormatter \
                or root.filters or len(handler.filters) != 1 or not logger.isEnabledFor(logging.INFO) \
                or handler.level > logging.INFO or logger.parent is not root:
            return None
        return handler

    def info(self, message: str, fields: dict) -> None:
        handler = self._direct()
        if handler is None:
            self.logger.info("%s", message, extra=fields)
            return
        now = time.time()
        second = int(now)
        handler.write_line(orjson.dumps(
            {"ts": f"{_second_text(second)}.{int((now - second) * 1000):03d}Z",
             "level": "info", "logger": self.logger.name, "message": message, "request_id": current_request_id(),
             **fields}, default=str, option=orjson.OPT_APPEND_NEWLINE))


    def request(self, request_id: str, method: str, path: str, status: int, latency_ms: float, model: str | None,
                version: int | None, routed_by: str | None, cache: str | None, key: str | None) -> None:
        """A request's access line: the line `info` writes with these fields, in this order. On the
        direct path the JSON of all but the request id, the time and the latency is made once per
        shape of line and kept, so that a request's line is spliced, not serialised."""
        handler = self._direct()
        if handler is None:
            self.info(f"{method} {path} {status}", {
                "method": method, "path": path, "status": status, "latency_ms": latency_ms, "model": model,
                "version": version, "routed_by": routed_by, "cache": cache, "key": key})
            return
        shape = (method, path, status, model, version, routed_by, cache, key)
        parts = self._shapes.get(shape)
        if parts is None:
            if len(self._shapes) >= self.MAX_SHAPES:
                self._shapes.clear()
            dumps = orjson.dumps
            parts = self._shapes[shape] = (
                b'"message":' + dumps(f"{method} {path} {status}") + b',"request_id":',
                b',"method":' + dumps(method) + b',"path":' + dumps(path) + b',"status":' + dumps(status)
                + b',"latency_ms":',
                dumps({"model": model, "version": version, "routed_by": routed_by, "cache": cache, "key": key},
                      default=str).replace(b"{", b",", 1) + b"\n")
        millisecond = int(time.time() * 1000)
        stamp = self._stamp
        if stamp[0] != millisecond:  # the line's start, made once per millisecond
            second = millisecond // 1000
            stamp = self._stamp = (millisecond, (self._head % (_second_text(second), millisecond % 1000)).encode())
        handler.write_line(b"".join((stamp[1], parts[0], orjson.dumps(request_id), parts[1], orjson.dumps(latency_ms),
                                     parts[2])))


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    # The logging cookbook's optimisations: no caller frame, thread or process
    # lookups per record (the JSON lines do not carry them).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BufferedStderr()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    flush_logs()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # the router logs one line per request itself


def startup_settings():
    """Settings from the environment and `.env`, with logging configured from
    them; None (after one clear stderr message) when they are invalid."""
    from pydantic import ValidationError

    from router.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"error: invalid configuration:\n{exc}", file=sys.stderr)
        return None
    configure_logging(settings.log_level, settings.log_json)
    return settings


def flush_logs() -> None:
    """Writes every buffered line now (the app's shutdown calls it)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BufferedStderr):
            handler.flush_now()
