"""Fail open on a shared dependency (Redis), without making every request wait
on it while it is down: after an error it is skipped for a back-off that
doubles up to a maximum; the first success after that closes it again."""

from __future__ import annotations

import logging
import time


class Breaker:
    def __init__(self, name: str, meanwhile: str, backoff_max: float, log: logging.Logger) -> None:
        self.name = name  # e.g. "redis cache"
        self.meanwhile = meanwhile  # what happens while it is skipped, for the log line
        self.backoff_max = backoff_max
        self.log = log
        self._backoff = 0.0
        self._skip_until = 0.0

    @property
    def available(self) -> bool:
        """False while the dependency is being skipped."""
        return time.monotonic() >= self._skip_until

    @property
    def tripped(self) -> bool:
        """True from a failure until the next success."""
        return self._backoff > 0.0

    def failed(self, op: str, exc: BaseException) -> None:
        first = self._backoff == 0.0
        self._backoff = min(self.backoff_max, max(0.25, self._backoff * 2))
        self._skip_until = time.monotonic() + self._backoff
        if first:
            self.log.warning("%s %s failed (%s: %s); %s, retrying in %.2fs", self.name, op,
                             exc.__class__.__name__, exc, self.meanwhile, self._backoff)

    def succeeded(self) -> None:
        if self._backoff:
            self.log.info("%s is reachable again", self.name)
        self._backoff = 0.0
