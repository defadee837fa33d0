"""`sensord status`: a readable summary of a running sensord, from its HTTP API."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

EXIT_READY, EXIT_DEGRADED, EXIT_NOT_READY = 0, 1, 2


def fetch_status(
    base_url: str, timeout: float = 5.0, path: str = "/api/v1/status"
) -> dict[str, Any]:
    url = base_url.rstrip("/") + path
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
        f"prefix {amqp['prefix']}"
        + (f", node {amqp['node']}" if amqp.get("node") else "")
        + (f" of {len(amqp['cluster'])}" if len(amqp.get("cluster") or []) > 1 else ""),
        f"{'readings':<10}{st['readings_total']:,} total, {st['readings_per_s']:g}/s",
        f"{'invalid':<10}{_counts(st['invalid_total'])}",
        f"{'firing':<10}{_counts(st['alerts_active'])}",
        f"{'held':<10}{st['alerts_pending_publish']:,} alert event(s) waiting for RabbitMQ",
    ]
    if st.get("channels"):
        lines.append(f"{'channels':<10}{', '.join(st['channels'])}")
    for src in st.get("sources", []):
        lines.append(
            f"{'source':<10}{src['name']} ({src['format']}): {src['devices']:,} device(s), "
            f"{src['readings']:,} readings, {src['refused']:,} refused"
        )
    return "\n".join(lines)


def render_sources(data: dict[str, Any], devices: int = 20) -> str:
    """`sensord sources`: per source its counters and (up to `devices`) devices."""
    out: list[str] = []
    for src in data["sources"]:
        skipped = _counts(src["skipped"])
        out += [
            f"{src['name']}  format {src['format']}",
            f"  topics    {', '.join(src['topics'][:10])}"
            + (f" (+{len(src['topics']) - 10} learned)" if len(src["topics"]) > 10 else ""),
            f"  messages  {src['messages']:,}, readings {src['readings']:,}, "
            f"refused {src['refused']:,}",
            f"  skipped   {skipped}",
        ]
        seen = src["devices"]
        names = ", ".join(f"{d['site']}/{d['device']}" for d in seen[:devices])
        more = f" … (+{len(seen) - devices})" if len(seen) > devices else ""
        out.append(f"  devices   {len(seen):,}" + (f": {names}{more}" if seen else ""))
        if src.get("discovered"):
            out.append(f"  learned   {json.dumps(src['discovered'], sort_keys=True)[:300]}")
    return "\n".join(out) if out else "no sources (the notify role ingests nothing)"


def exit_code(st: dict[str, Any]) -> int:
    return {"ready": EXIT_READY, "degraded": EXIT_DEGRADED}.get(st["status"], EXIT_NOT_READY)


class StatusUnavailableError(Exception):
    pass


def get(base_url: str, path: str = "/api/v1/status") -> dict[str, Any]:
    try:
        return fetch_status(base_url, path=path)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise StatusUnavailableError(f"cannot reach sensord at {base_url}: {reason}") from None
