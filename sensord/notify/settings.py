"""What every `[[channels]]` entry has, whatever its type: name, filters, retries, rate limit.

A channel type's own keys live in its module (`console.py`, `webhook.py`, ...), in a
subclass of `ChannelSettingsBase` registered in `sensord.notify.registry`.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from sensord.ops.settings import Duration, Section

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class RetrySettings(Section):
    max_attempts: int = Field(default=3, ge=1, le=100)
    delay: Duration = 5.0
    max_delay: Duration = 300.0


SeverityName = Literal["critical", "warning", "info"]


def _all_severities() -> list[SeverityName]:
    return ["critical", "warning", "info"]


# Fields a channel's message templates may use (str.format syntax, e.g. "{value:.1f}").
TEMPLATE_FIELDS = (
    "status",
    "STATUS",
    "severity",
    "rule",
    "site",
    "device",
    "kind",
    "value",
    "threshold",
    "summary",
    "fingerprint",
    "event_id",
    "starts_at",
    "ends_at",
    "time",
    "channel",
    "count",
)


def check_template(template: str) -> str:
    """Fail at load time, not at the first alert, on a template that cannot be rendered."""
    sample: dict[str, object] = dict.fromkeys(TEMPLATE_FIELDS, "x")
    sample.update(value=1.5, threshold=1.0, count=1)
    try:
        template.format_map(sample)
    except KeyError as exc:
        raise ValueError(
            f"unknown template field {exc}; known: {', '.join(TEMPLATE_FIELDS)}"
        ) from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"invalid template: {exc}") from None
    return template


class ChannelMatch(Section):
    """Label globs (fnmatch) on the alert's site and kind."""

    site: str = "*"
    kind: str = "*"


class RateLimitSettings(Section):
    """Token bucket: `rate` notifications per second on average, bursts of `burst`."""

    rate: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class ChannelSettingsBase(Section):
    # keys naming files that must exist when the config is loaded (secrets, CA bundles);
    # relative ones resolve against the config file's directory
    FILE_KEYS: ClassVar[tuple[str, ...]] = ()

    name: str
    type: str  # a subclass narrows it to its registered name, e.g. Literal["console"]
    severities: list[SeverityName] = Field(default_factory=_all_severities, min_length=1)
    send_resolved: bool = True
    retry: RetrySettings = Field(default_factory=RetrySettings)
    prefetch: int = Field(default=16, ge=1, le=10_000)
    match: ChannelMatch | None = None
    rate_limit: RateLimitSettings | None = None
    # re-announce a firing, unacknowledged alert this often; None: [alerts] repeat_interval
    repeat_interval: Duration | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError("only letters, digits, '_' and '-' are allowed")
        return v


def http_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return v
