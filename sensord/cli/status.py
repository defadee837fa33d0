"""`sensord status`: a readable summary of a running sensord, from its HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

EXIT_READY, EXIT_DEGRADED, EXIT_NOT_READY = 0, 1, 2


def fetch_status(base_url: str, timeout: float = 5.0) -> dict[str, Any]:
    url = base_url.rstrip("/") + "/api/v1/status"
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own URL
        data: dict[str, Any] = json.load(resp)
        return data


def _duration(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    return f"{m}m {s}s" if m else f"{s}s"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items())) or "none"


def render_status(st: dict[str, Any]) -> str:
    reasons = "; ".join(st.get("reasons", []))
    head = (
        f"sensord {st['version']}  role {st['role']}  up {_duration(st['uptime_s'])}  "
        f"status: {st['status']}" + (f" ({reasons})" if reasons else "")
    )
    mqtt, amqp = st["mqtt"], st["amqp"]
    lines = [
        head,
        f"{'MQTT':<10}{'connected' if mqtt['connected'] else 'DOWN':<13}{mqtt['url']}",
        f"{'RabbitMQ':<10}{'connected' if amqp['connected'] else 'UNREACHABLE':<13}"
        f"prefix {amqp['prefix']}",
        f"{'readings':<10}{st['readings_total']:,} total, {st['readings_per_s']:g}/s",
        f"{'invalid':<10}{_counts(st['invalid_total'])}",
        f"{'firing':<10}{_counts(st['alerts_active'])}",
        f"{'held':<10}{st['alerts_pending_publish']:,} alert event(s) waiting for RabbitMQ",
    ]
    if st.get("channels"):
        lines.append(f"{'channels':<10}{', '.join(st['channels'])}")
    return "\n".join(lines)


def exit_code(st: dict[str, Any]) -> int:
    return {"ready": EXIT_READY, "degraded": EXIT_DEGRADED}.get(st["status"], EXIT_NOT_READY)


class StatusUnavailableError(Exception):
    pass


def get(base_url: str) -> dict[str, Any]:
    try:
        return fetch_status(base_url)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnavailableError(f"cannot reach sensord at {base_url}: {reason}") from None
