"""What every channel is: start, send one event (or raise NotifyError), close."""

from __future__ import annotations

from typing import Protocol

from sensord.errors import NotifyError
from sensord.events import AlertEvent


class NotificationChannel(Protocol):
    name: str

    async def start(self) -> None: ...

    async def send(self, event: AlertEvent) -> None:
        """Deliver once; raise NotifyError (retryable or not) on failure."""

    async def close(self) -> None: ...


def retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def http_error(url: str, status: int, retry_after_header: str | None) -> NotifyError:
    """2xx is delivered; 408, 429 and 5xx are worth retrying; any other status is permanent."""
    retryable = status in (408, 429) or status >= 500
    return NotifyError(
        f"{url} answered HTTP {status}",
        retryable=retryable,
        retry_after=retry_after(retry_after_header),
    )
