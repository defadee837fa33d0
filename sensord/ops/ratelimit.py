"""Log at a bounded rate: bad input may arrive thousands of times a second."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """At most `burst` lines per `interval` seconds; then one line saying how many were held."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, burst: int = 5) -> None:
        self._logger = logger
        self._interval = interval
        self._burst = burst
        self._window_start = 0.0
        self._in_window = 0
        self._suppressed = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._window_start >= self._interval:
            if self._suppressed:
                self._logger.warning(
                    "%d similar messages suppressed in the last %.0fs",
                    self._suppressed,
                    self._interval,
                )
            self._window_start = now
            self._in_window = 0
            self._suppressed = 0
        if self._in_window < self._burst:
            self._in_window += 1
            self._logger.warning(msg, *args)
        else:
            self._suppressed += 1
