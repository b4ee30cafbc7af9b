"""API keys with scopes. A key arrives as `Authorization: Bearer <key>` or
`X-API-Key: <key>`; its sha256 is compared in constant time with every
configured hash; the key itself is never stored or logged (the record and
the log lines carry the key's name)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from starlette.datastructures import Headers

from router.errors import Forbidden, Unauthorized
from router.settings import ApiKey, Settings


@dataclass(frozen=True)
class Principal:
    name: str | None  # None: anonymous
    scopes: frozenset[str]
    rate: str | None = None  # the key's own rate limit, when it has one


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def presented_key(headers: Headers) -> str | None:
    """The key in the request, None when there is none; a malformed
    Authorization header is refused rather than treated as anonymous."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be `Bearer <API key>`")
        return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key is not None else None


class KeyRing:
    def __init__(self, keys: list[ApiKey], anonymous: frozenset[str]) -> None:
        self._keys = [(bytes.fromhex(k.key_sha256), Principal(k.name, frozenset(k.scopes), k.rate)) for k in keys]
        self.anonymous = Principal(None, anonymous)

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        return cls(settings.api_keys, settings.anonymous())

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def authenticate(self, key: str | None) -> Principal:
        if key is None:
            return self.anonymous
        digest = key_digest(key)
        found = None
        for known, principal in self._keys:  # every entry compared: the time does not tell which matched
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise Unauthorized("unknown API key")
        return found

    def authorize(self, principal: Principal, scope: str) -> None:
        if scope in principal.scopes:
            return
        if principal.name is None:
            raise Unauthorized(f"this route needs an API key with the {scope!r} scope")
        raise Forbidden(f"the API key {principal.name!r} does not have the {scope!r} scope")
