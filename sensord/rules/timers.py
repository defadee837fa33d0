"""Time: `for` pending and `keep_firing_for` clearing elapse on ticks; deadman clocks.

`tick(now)` fires pending alerts whose `for` has elapsed (while their evidence is fresh),
resolves clearing ones whose `keep_firing_for` has, and fires the deadman (`absent_for`)
alerts of sensors and expected sensors that stayed silent; `_heard` resolves a sensor's
deadman alerts when it speaks again.
"""

from __future__ import annotations

from sensord.rules.machine import StateMachine
from sensord.rules.records import AlertTransition
from sensord.rules.state import Expectation, RuleState, Sensor


class Timers(StateMachine):
    """The state machine, driven by the clock as well as by readings."""

    start: float | None  # when the deadman clocks of expected sensors started
    _absent: list[RuleState]  # the states of absent_for rules
    _expectations: list[Expectation]

    def tick(self, now: float) -> list[AlertTransition]:
        """Time passes: `for` and `keep_firing_for` elapse between readings; deadman clocks."""
        out: list[AlertTransition] = []
        if self.start is None:
            self.start = now
        for st in list(self._timed):
            c = st.c
            before = len(out)
            if st.pending_since is not None:
                if now - st.last_ts > c.stale:  # the evidence went stale: no longer pending
                    st.pending_since = None
                    self._timed.pop(st, None)
                    self.dirty.add(st)
                    continue
                if now - st.pending_since < c.for_:
                    continue
                self._fire(st, st.last_value, now, out)
            elif st.clearing_since is not None:
                if now - st.clearing_since < c.keep:
                    continue
                self._resolve(st, st.last_value, now, out)
            else:
                self._timed.pop(st, None)
                continue
            if st.flap is not None:
                self._flap(st, st.last_value, now, before, out)
        for st in self._absent:
            absent = st.c.absent
            assert absent is not None
            if st.firing_since is None and now - st.sensor.last_seen >= absent:
                st.firing_since = now
                self.dirty.add(st)
                out.append(
                    AlertTransition(
                        st.c.rule, "firing", st.sensor.labels, None, now, now, None, absent
                    )
                )
        for e in self._expectations:
            absent = e.c.absent
            assert absent is not None
            since = e.since if e.since is not None else self.start
            if not e.satisfied and e.firing_since is None and now - since >= absent:
                e.firing_since = now
                self.dirty.add(e)
                out.append(
                    AlertTransition(e.c.rule, "firing", e.labels, None, now, now, None, absent)
                )
        return out

    def _heard(self, sensor: Sensor, value: float, ts: float, out: list[AlertTransition]) -> None:
        """A reading resolves the sensor's firing deadman alerts: the silent one speaks."""
        for st in sensor.absent:
            if st.firing_since is not None:
                c = st.c
                out.append(
                    AlertTransition(
                        c.rule, "resolved", sensor.labels, value, st.firing_since, ts, ts, c.absent
                    )
                )
                st.firing_since = None
                self.dirty.add(st)
