"""A channel's `rate_limit`: a token bucket consulted before each notification."""

from __future__ import annotations

from sensord.notify.settings import RateLimitSettings


class TokenBucket:
    """`rate` tokens per second, at most `burst`; `take` returns 0 or the wait for a token."""

    def __init__(self, settings: RateLimitSettings, now: float) -> None:
        self.rate = settings.rate
        self.burst = float(settings.burst)
        self._tokens = self.burst
        self._at = now

    def take(self, now: float) -> float:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate
