"""The router's admin API and Triton's repository API, over httpx (imported on first use).

Every failure is one ExportError line: `router: 409 conflict: <message>`.
Headers (the keys) are never printed.
"""

from __future__ import annotations

import os
from typing import Any, Mapping
from urllib.parse import quote

from export.errors import ExportError

DEFAULT_ROUTER_URL = "http://localhost:8080"  # the router's PORT (router/settings.py)
DEFAULT_TRITON_URL = "http://localhost:8000"
DEFAULT_TRITON_ADMIN_HEADER = "triton-admin-key"  # TRITON_ADMIN_HEADER's default in router/settings.py
TIMEOUT_S = 10.0  # every HTTP call but Triton's load
TRANSIENT = (500, 502, 503, 504)  # a restart, a gateway, the router's Redis unreachable (503 control_unavailable)


class Unreachable(ExportError):
    """No answer (`status` None), or one of TRANSIENT: worth asking again while following."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def base_url(text: str) -> str:
    """`host:port` -> `http://host:port`; no trailing slash."""
    text = text.strip().rstrip("/")
    return text if "://" in text else f"http://{text}"


def router_url(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    return base_url(flag or environ.get("ROUTER_URL") or DEFAULT_ROUTER_URL)


def triton_url(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    return base_url(flag or environ.get("TRITON_HTTP_URL") or DEFAULT_TRITON_URL)


def router_hints(key_set: bool) -> dict[int, str]:
    return {401: "the key in ROUTER_API_KEY was refused" if key_set
            else "set ROUTER_API_KEY to a key with the admin scope",
            403: "the key in ROUTER_API_KEY lacks the admin scope"}


def triton_hints(header: str, key_set: bool) -> dict[int, str]:
    hint = (f"Triton refused the key in TRITON_ADMIN_KEY (sent as header {header})" if key_set
            else "Triton restricts its repository API: set TRITON_ADMIN_KEY (and TRITON_ADMIN_HEADER)")
    return {401: hint, 403: hint}


def error_line(service: str, status: int, body: Any, phrase: str = "", hints: Mapping[int, str] = {}) -> str:
    """`router: 409 conflict: <message> (<hint>)` from an error body of the router's
    (`{"error": {"code", "message"}}`), Triton's (`{"error": "..."}`) or FastAPI's (`{"detail": "..."}`)."""
    error = body.get("error", body.get("detail")) if isinstance(body, dict) else None
    code, message = (error.get("code"), error.get("message")) if isinstance(error, dict) else (None, error)
    line = f"{service}: {status} {code or phrase.lower() or 'error'}"
    if isinstance(message, str) and message.strip():
        line += ": " + " ".join(message.split())[:300]
    if status in hints:
        line += f" ({hints[status]})"
    return line


class Api:
    """JSON over HTTP to one service; every failure is one ExportError line. Never shows its headers."""

    def __init__(self, service: str, url: str, headers: Mapping[str, str], hints: Mapping[int, str] = {}) -> None:
        import httpx

        self.service, self.url, self.hints = service, url, hints
        try:
            self._http = httpx.Client(base_url=url, headers=dict(headers), timeout=TIMEOUT_S)
        except httpx.InvalidURL as exc:
            raise ExportError(f"{service}: bad URL {url!r} ({exc})") from None

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc) -> None:
        self._http.close()

    def send(self, method: str, path: str, body: Any = None, timeout: float = TIMEOUT_S):
        import httpx

        try:
            return self._http.request(method, path, json=body, timeout=timeout)
        except httpx.TimeoutException:
            raise Unreachable(f"{self.service}: no answer from {self.url} within {timeout:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise Unreachable(f"{self.service}: cannot reach {self.url} ({exc or exc.__class__.__name__})") from None

    def call(self, method: str, path: str, body: Any = None, timeout: float = TIMEOUT_S) -> Any:
        """The JSON answer (None when empty), or the error line of a non-2xx one."""
        response = self.send(method, path, body, timeout)
        try:
            payload = response.json() if response.content else None
        except ValueError:
            payload = None
            if response.is_success:
                raise ExportError(f"{self.service}: {method} {path} answered {response.status_code} "
                                  "without JSON") from None
        if response.is_success:
            return payload
        line = error_line(self.service, response.status_code, payload, response.reason_phrase, self.hints)
        if response.status_code in TRANSIENT:
            raise Unreachable(line, response.status_code)
        raise ExportError(line)


def router_api(flag: str | None, environ: Mapping[str, str] = os.environ) -> Api:
    key = environ.get("ROUTER_API_KEY")
    return Api("router", router_url(flag, environ), {"X-API-Key": key} if key else {}, router_hints(bool(key)))


def triton_api(flag: str | None, environ: Mapping[str, str] = os.environ) -> Api:
    header = environ.get("TRITON_ADMIN_HEADER") or DEFAULT_TRITON_ADMIN_HEADER
    key = environ.get("TRITON_ADMIN_KEY")
    return Api("triton", triton_url(flag, environ), {header: key} if key else {}, triton_hints(header, bool(key)))


def rollout_path(model: str) -> str:
    return f"/admin/rollouts/{quote(model, safe='')}"

