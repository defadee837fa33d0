"""One alert's events stay in order when the earlier one waits in a retry tier (found by the
chaos suite: with the target answering 503, a resolution overtook its firing)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from sensord.events import AlertEvent, Severity
from sensord.notify.order import EXPIRY_SLACK, RetryOrder
from tests.support import (
    SensordProcess,
    WebhookSink,
    make_event,
    publish_events,
    queue_depth,
    running,
    wait_for,
)

T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


def event(event_id: str, seconds: float, fingerprint: str = "fp") -> AlertEvent:
    return AlertEvent(
        event_id=event_id,
        fingerprint=fingerprint,
        status="firing",
        rule="hot",
        severity=Severity.CRITICAL,
        labels={},
        annotations={},
        value=None,
        threshold=None,
        starts_at=T0,
        observed_at=T0 + timedelta(seconds=seconds),
    )


def test_a_parked_event_holds_back_later_events_of_its_alert_only() -> None:
    order = RetryOrder()
    firing, resolved, other = event("f", 0), event("r", 5), event("o", 9, fingerprint="fp2")
    assert not order.blocked(resolved, 100.0)
    order.park(firing, 100.0, 4.0)
    assert order.blocked(resolved, 101.0)  # the firing waits: the resolution waits too
    assert not order.blocked(firing, 101.0)  # itself, and nothing earlier
    assert not order.blocked(other, 101.0)  # another alert
    order.park(resolved, 101.0, 0.5)
    assert order.blocked(resolved, 101.5)  # back from its tier before the firing: again
    order.settled(firing)
    assert not order.blocked(resolved, 105.0)
    order.settled(resolved)
    assert len(order) == 0


def test_an_overdue_entry_stops_holding_others_back() -> None:
    order = RetryOrder()
    order.park(event("f", 0), 100.0, 4.0)
    later = event("r", 5)
    assert order.blocked(later, 100.0 + 8.0 + EXPIRY_SLACK - 0.1)
    assert not order.blocked(later, 100.0 + 8.0 + EXPIRY_SLACK + 0.1)
    assert len(order) == 0  # forgotten


@pytest.mark.e2e
async def test_a_resolution_never_overtakes_its_firing_waiting_in_a_retry_tier(
    sensord: SensordProcess, webhook: WebhookSink
) -> None:
    """The firing fails while the target is down and backs off to ever longer tiers; the
    resolution, published later, fails in the short tier. Without the hold it comes back
    first once the target is up and is delivered before the firing."""
    sensord.role = "notify"
    sensord.channels = [
        {
            "name": "hook",
            "type": "webhook",
            "url": webhook.url,
            "retry": {"max_attempts": 30, "delay": "200ms", "max_delay": "3200ms"},
        }
    ]
    webhook.fail_with = 503
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pairs = []
    for device in ("t-1", "t-2", "t-3"):
        firing = make_event(device=device, fingerprint=f"fp-{device}")
        firing["observed_at"] = "2026-11-28T12:00:00Z"
        resolved = {
            **make_event(device=device, fingerprint=f"fp-{device}", status="resolved"),
            "observed_at": "2026-11-28T12:00:05Z",
            "ends_at": now,
        }
        pairs.append((firing, resolved))
    async with running(sensord):
        await publish_events(sensord.prefix, [f for f, _ in pairs])
        await asyncio.sleep(3.5)  # the firings back off: 0.2, 0.4, 0.8, 1.6 s tiers
        await publish_events(sensord.prefix, [r for _, r in pairs])
        await asyncio.sleep(1.0)  # the resolutions cycle in the short tier
        webhook.fail_with = None
        await wait_for(lambda: len(webhook.bodies) >= 6, timeout=30)
        metrics = await sensord.metrics()
        await asyncio.sleep(1)  # nothing more may arrive
        retry = [q for q in sensord.queues() if ".retry." in q]
        depths = [await queue_depth(q) for q in retry]
        assert await sensord.stop() == 0
    assert len(webhook.bodies) == 6
    per_alert: dict[str, list[str]] = {}
    for body in webhook.bodies:
        alert = body["alerts"][0]
        per_alert.setdefault(alert["fingerprint"], []).append(alert["status"])
    assert per_alert == {f"fp-{d}": ["firing", "resolved"] for d in ("t-1", "t-2", "t-3")}
    assert metrics['sensord_notifications_total{channel="hook",outcome="held"}'] >= 3
    assert depths == [0] * len(retry)
