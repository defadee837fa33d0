"""The alert pipeline (sensord/pipeline.py): one transaction per batch of readings."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry

from sensord.alerts.lifecycle import build_event, cached_fingerprint, fingerprint, new_event_id
from sensord.app import Service
from sensord.events import AlertEvent, Reading
from sensord.ops.config import load_settings
from sensord.ops.metrics import Metrics
from sensord.rules import RuleEngine, load_rules
from sensord.rules.loader import load_rule_file

RULES = """rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    clear_below: 75
    severity: critical
"""


def _service(tmp_path: Path) -> Service:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "r.yaml").write_text(RULES)
    config = tmp_path / "sensord.toml"
    config.write_text('[rules]\npaths = ["rules/*.yaml"]\n[http]\nlisten = ""\n')
    settings = load_settings(config, environ={})
    rules = load_rules(settings.rules.paths, settings.base_dir)
    return Service(settings, rules, "edge", metrics=Metrics(CollectorRegistry()))


def test_a_batch_of_transitions_is_one_transaction(tmp_path: Path) -> None:
    service = _service(tmp_path)
    pipeline = service.pipeline
    assert pipeline is not None
    statements: list[str] = []
    service.db.set_trace_callback(statements.append)
    now = time.time()
    # 50 sensors fire, then 20 of them resolve, all in one read batch
    for i in range(50):
        topic = f"sensors/p/t-{i}/temperature"
        hot = Reading(site="p", device=f"t-{i}", kind="temperature", value=90, ts=now - 2)
        pipeline.on_reading(hot, now, (topic, hot.device, hot.kind))
    for i in range(20):
        topic = f"sensors/p/t-{i}/temperature"
        cool = Reading(site="p", device=f"t-{i}", kind="temperature", value=60, ts=now - 1)
        pipeline.on_reading(cool, now, (topic, cool.device, cool.kind))
    assert not any(s == "BEGIN IMMEDIATE" for s in statements)  # nothing before batch end
    pipeline.end_batch()
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == [
        "BEGIN IMMEDIATE",
        "COMMIT",
    ]
    # every transition is on disk: 70 events in the outbox, 30 alerts still firing, and
    # each sensor's guard holds the newest reading that changed its alert
    db = service.db
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (70,)
    assert len(service.outbox) == 70
    assert db.execute("SELECT count(*) FROM alerts").fetchone() == (30,)
    assert service.state is not None
    guards = service.state.remembered_readings()
    assert len(guards) == 50
    assert guards[("sensors/p/t-0/temperature", "t-0", "temperature")] == now - 1
    assert guards[("sensors/p/t-49/temperature", "t-49", "temperature")] == now - 2
    # the outbox hands the rows over in order, without reading them back
    statements.clear()
    rows = service.outbox.head(1000)
    assert not any("FROM outbox" in s and "SELECT seq," in s for s in statements)
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    statuses = [r.body.count(b'"status":"firing"') for r in rows]
    assert statuses == [1] * 50 + [0] * 20
    # a batch that changed nothing commits nothing
    statements.clear()
    pipeline.end_batch()
    assert statements == []
    service.db.close()


def test_events_built_without_validation_are_valid_contract_events(tmp_path: Path) -> None:
    """build_event skips pydantic's validation (AlertEvent.trusted) and caches the
    fingerprint per sensor: what it builds must still be what validation would give."""
    ids = {new_event_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)

    (tmp_path / "r.yaml").write_text(RULES)
    engine = RuleEngine(load_rule_file(tmp_path / "r.yaml"))
    now = time.time()
    [tr] = engine.evaluate(Reading(site="p", device="t", kind="temperature", value=90, ts=now), now)
    event = build_event(tr)
    assert AlertEvent.model_validate_json(event.model_dump_json()) == event
    assert AlertEvent.model_validate(event.model_dump()) == event
    assert event.fingerprint == fingerprint("hot", tr.labels)
    # a repeat is the same event under a new id (AlertStore.due)
    repeat = event.model_copy(update={"event_id": "r-1"})
    assert (repeat.event_id, event.event_id != "r-1") == ("r-1", True)
    assert repeat.model_dump(exclude={"event_id"}) == event.model_dump(exclude={"event_id"})
    # the cache follows the labels: a changed dict gets its own fingerprint
    labels = {"site": "p", "device": "t", "kind": "temperature"}
    first = cached_fingerprint("hot", labels)
    labels["device"] = "u"
    assert cached_fingerprint("hot", labels) == fingerprint("hot", labels) != first
