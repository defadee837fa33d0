"""The central rules stage's part of the composition root (kept out of sensord/app.py)."""

from __future__ import annotations

from sensord.amqp.shared import SharedConnection
from sensord.central.reader import CentralMetrics, CentralReader
from sensord.ops.config import Settings
from sensord.ops.metrics import Metrics
from sensord.pipeline import AlertPipeline
from sensord.state.store import StateStore


def build_reader(
    settings: Settings,
    pipeline: AlertPipeline | None,
    state: StateStore | None,
    metrics: Metrics,
    link: SharedConnection | None,
) -> CentralReader:
    """`--role rules`: the readings streams into the alert pipeline, on `link` (the
    consuming connection)."""
    assert pipeline is not None, "the rules role judges"
    assert state is not None, "the rules role judges"
    reader = CentralReader(
        settings.central,
        settings.telemetry,
        settings.amqp,
        pipeline=pipeline,
        state=state,
        metrics=metrics,
        outage_tolerance=settings.rules.outage_tolerance,
        link=link,
    )
    metrics.registry.register(CentralMetrics(reader))
    return reader
