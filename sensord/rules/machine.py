"""The per-(rule, sensor) state machine: pending → firing → clearing → resolved, and flapping.

`_step` takes one evaluated value (raw, aggregate or rate) of one state and appends the
transitions it causes; `_fire` and `_resolve` are shared with the timers (tick), `_flap`
holds notifications while a state flaps. The engine is built in layers, each a class
that the next extends (machine → timers → groups → index → restore → engine): the hot path stays
plain method calls on one object, as fast as when it was one class, and the layers share
the engine's fields, which each declares where it is introduced.
"""

from __future__ import annotations

from sensord.rules.records import AlertTransition
from sensord.rules.state import Expectation, RuleState


class StateMachine:
    """What a state's changes leave besides transitions: the states to persist (`dirty`)
    and the states with a `for` or `keep_firing_for` timer running (`_timed`; a dict: an
    ordered set, so that tick() reports in a reproducible order)."""

    dirty: set[RuleState | Expectation]
    _timed: dict[RuleState, None]

    def _step(
        self, st: RuleState, x: float, ts: float, breach: bool, out: list[AlertTransition]
    ) -> None:
        c = st.c
        before = len(out)
        if st.firing_since is None:
            if breach:
                if st.pending_since is None:
                    st.pending_since = ts
                    self.dirty.add(st)
                st.last_value = x
                st.last_ts = ts
                if ts - st.pending_since >= c.for_:
                    self._fire(st, x, ts, out)
                else:
                    self._timed[st] = None
            elif st.pending_since is not None:  # `for` interrupted
                st.pending_since = None
                self._timed.pop(st, None)
                self.dirty.add(st)
        else:
            st.last_value = x
            st.last_ts = ts
            clear = (x < c.clo or x > c.chi) if c.inside else (c.clo < x < c.chi)
            if clear:
                if not c.keep:
                    self._resolve(st, x, ts, out)
                else:
                    if st.clearing_since is None:
                        st.clearing_since = ts
                        self._timed[st] = None
                        self.dirty.add(st)
                    if ts - st.clearing_since >= c.keep:
                        self._resolve(st, x, ts, out)
            elif st.clearing_since is not None:  # keep_firing_for re-arms
                st.clearing_since = None
                self._timed.pop(st, None)
                self.dirty.add(st)
        if st.flap is not None:
            self._flap(st, x, ts, before, out)

    def _fire(
        self, st: RuleState, x: float | None, observed: float, out: list[AlertTransition]
    ) -> None:
        c = st.c
        st.firing_since = st.pending_since
        st.pending_since = None
        self._timed.pop(st, None)
        self.dirty.add(st)
        assert st.firing_since is not None
        out.append(
            AlertTransition(
                c.rule,
                "firing",
                st.sensor.labels,
                x,
                st.firing_since,
                observed,
                None,
                c.threshold(x),
            )
        )

    def _resolve(
        self, st: RuleState, x: float | None, observed: float, out: list[AlertTransition]
    ) -> None:
        c = st.c
        assert st.firing_since is not None
        out.append(
            AlertTransition(
                c.rule,
                "resolved",
                st.sensor.labels,
                x,
                st.firing_since,
                observed,
                observed,
                c.threshold(x),
            )
        )
        st.firing_since = None
        st.clearing_since = None
        self._timed.pop(st, None)
        self.dirty.add(st)

    def _flap(
        self,
        st: RuleState,
        x: float | None,
        observed: float,
        before: int,
        out: list[AlertTransition],
    ) -> None:
        """Record the evaluation in the history; hold notifications while flapping."""
        f = st.flap
        assert f is not None
        c = st.c
        f.bits = ((f.bits << 1) | (st.firing_since is not None)) & c.flap_mask
        changes = f.bits ^ (f.bits >> 1)
        weights = c.flap_weights
        score = sum(w for j, w in enumerate(weights) if changes >> j & 1) / len(weights)
        new = out[before:]
        del out[before:]
        if not f.flapping:
            if score > c.flap_high:
                f.flapping = True
                self.dirty.add(st)
                since = st.firing_since if st.firing_since is not None else observed
                out.append(
                    AlertTransition(
                        c.rule,
                        "flapping",
                        st.sensor.labels,
                        x,
                        since,
                        observed,
                        None,
                        c.threshold(x),
                    )
                )
                return  # what this evaluation changed is held with the rest
            for tr in new:
                out.append(tr)
                f.announced_since = tr.starts_at if tr.status == "firing" else None
            return
        if score >= c.flap_low:
            return  # still flapping: held
        f.flapping = False
        self.dirty.add(st)
        if st.firing_since is not None and f.announced_since is None:
            f.announced_since = st.firing_since
            out.append(
                AlertTransition(
                    c.rule,
                    "firing",
                    st.sensor.labels,
                    x,
                    st.firing_since,
                    observed,
                    None,
                    c.threshold(x),
                )
            )
        elif st.firing_since is None and f.announced_since is not None:
            out.append(
                AlertTransition(
                    c.rule,
                    "resolved",
                    st.sensor.labels,
                    x,
                    f.announced_since,
                    observed,
                    observed,
                    c.threshold(x),
                )
            )
            f.announced_since = None
