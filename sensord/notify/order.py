"""One alert's events in order across retries.

An event that failed waits in a retry tier; a later event of the same alert (its
resolution, say) reaching the channel meanwhile would otherwise be delivered first. The
consumer remembers, per fingerprint, the events it parked in a retry tier, and holds a
later event of that fingerprint back (parked in the shortest tier, without counting an
attempt) until the earlier ones were delivered or dead-lettered.

The memory is per process and in memory: it bounds itself (an entry expires when its
event is long overdue, so a lost or foreign copy never blocks an alert for good), and
after a restart the order holds again from the first failure of each waiting event.
"""

from __future__ import annotations

from sensord.events import AlertEvent

# an entry outlives its retry delay by this much before it stops holding others back
EXPIRY_SLACK = 30.0


class RetryOrder:
    __slots__ = ("_parked",)

    def __init__(self) -> None:
        # fingerprint -> event id -> (observed_at epoch s, expiry monotonic s)
        self._parked: dict[str, dict[str, tuple[float, float]]] = {}

    def __len__(self) -> int:
        return sum(len(p) for p in self._parked.values())

    def blocked(self, event: AlertEvent, now: float) -> bool:
        """An earlier event of the same alert waits in a retry tier."""
        parked = self._parked.get(event.fingerprint)
        if not parked:
            return False
        mine = event.observed_at.timestamp()
        held = False
        for event_id, (observed, expires) in list(parked.items()):
            if expires < now:
                del parked[event_id]
            elif event_id != event.event_id and observed < mine:
                held = True
        if not parked:
            del self._parked[event.fingerprint]
        return held

    def park(self, event: AlertEvent, now: float, delay: float) -> None:
        """The event was published to a retry tier of `delay` seconds."""
        entry = (event.observed_at.timestamp(), now + 2 * delay + EXPIRY_SLACK)
        self._parked.setdefault(event.fingerprint, {})[event.event_id] = entry

    def settled(self, event: AlertEvent) -> None:
        """The event was delivered, or dead-lettered: it holds nothing back any more."""
        parked = self._parked.get(event.fingerprint)
        if parked is not None:
            parked.pop(event.event_id, None)
            if not parked:
                del self._parked[event.fingerprint]
