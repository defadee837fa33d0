"""Hot reload: the engine swap (unchanged rules keep state) and the service's reload,
which keeps the old rules when a file is bad."""

from __future__ import annotations

import inspect
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from sensord.app import Service
from sensord.events import Reading
from sensord.ops.config import load_settings
from sensord.ops.metrics import Metrics
from sensord.rules import Rule, RuleEngine, load_rules
from tests.support import free_port


def reading(value: float, ts: float, device: str = "t-1") -> Reading:
    return Reading(site="plant-1", device=device, kind="temperature", value=value, ts=ts)


HOT = Rule.model_validate({"name": "hot", "above": 80, "for": "10s"})
WARM = Rule.model_validate({"name": "warm", "above": 30})
SILENT = Rule.model_validate({"name": "silent", "absent_for": "60s"})


def test_unchanged_rules_keep_their_state() -> None:
    engine = RuleEngine([HOT, WARM])
    assert [t.rule.name for t in engine.evaluate(reading(85, 0), 0)] == ["warm"]
    copy = Rule.model_validate({"name": "hot", "above": 80, "for": "10s"})  # equal, new object
    assert engine.replace_rules([copy, WARM], 5) == []
    # warm stays firing (no second firing); hot's pending `for` timer goes on from 0
    [firing] = engine.evaluate(reading(85, 10), 10)
    assert (firing.rule.name, firing.starts_at) == ("hot", 0)


def test_changed_and_removed_rules_resolve_and_start_afresh() -> None:
    engine = RuleEngine([HOT, WARM])
    engine.evaluate(reading(85, 0), 0)
    engine.evaluate(reading(85, 10), 10)  # hot fires
    warmer = Rule.model_validate({"name": "warm", "above": 50})
    out = engine.replace_rules([warmer], 20)
    assert sorted((t.rule.name, t.status, t.observed_at) for t in out) == [
        ("hot", "resolved", 20),
        ("warm", "resolved", 20),
    ]
    [firing] = engine.evaluate(reading(85, 21), 21)  # the new `warm` judges afresh
    assert (firing.rule, firing.starts_at) == (warmer, 21)
    assert engine.state_count == 1


def test_added_rules_apply_to_known_sensors() -> None:
    engine = RuleEngine([WARM])
    engine.evaluate(reading(40, 0), 0)
    assert engine.replace_rules([WARM, SILENT], 1) == []
    [firing] = engine.tick(61)  # the new deadman watches the sensor it already knew
    assert (firing.rule.name, firing.labels["device"]) == ("silent", "t-1")


def _service(tmp_path: Path, rules_text: str) -> tuple[Service, Path, CollectorRegistry]:
    rules_file = tmp_path / "rules" / "r.yaml"
    rules_file.parent.mkdir()
    rules_file.write_text(rules_text)
    config = tmp_path / "sensord.toml"
    config.write_text('[rules]\npaths = ["rules/*.yaml"]\n[http]\nlisten = ""\n')
    settings = load_settings(config, environ={})
    registry = CollectorRegistry()
    rules = load_rules(settings.rules.paths, settings.base_dir)
    service = Service(settings, rules, "edge", metrics=Metrics(registry))
    return service, rules_file, registry


def test_service_reload_swaps_valid_rules(tmp_path: Path) -> None:
    service, rules_file, registry = _service(tmp_path, "rules:\n  - name: a\n    above: 1\n")
    assert registry.get_sample_value("sensord_rules_loaded") == 1
    rules_file.write_text("rules:\n  - name: a\n    above: 1\n  - name: b\n    below: 0\n")
    assert service.reload() == (True, [])
    assert [r.name for r in service.engine.rules] == ["a", "b"]
    assert registry.get_sample_value("sensord_rules_loaded") == 2
    assert registry.get_sample_value("sensord_rules_reload_failures_total") == 0


def test_service_reload_keeps_old_rules_on_a_bad_file(tmp_path: Path) -> None:
    service, rules_file, registry = _service(tmp_path, "rules:\n  - name: a\n    above: 1\n")
    engine = service.engine
    rules_file.write_text("rules:\n  - name: a\n    above: 1\n    abov: 2\n")
    ok, problems = service.reload()
    assert not ok
    assert problems == [f"{rules_file}:4: rule 'a': abov: unknown key"]
    assert service.engine is engine
    assert [r.name for r in engine.rules] == ["a"]
    assert registry.get_sample_value("sensord_rules_reload_failures_total") == 1
    assert registry.get_sample_value("sensord_rules_loaded") == 1


def test_tick_runs_in_the_event_loop_not_a_thread() -> None:
    """APScheduler runs plain functions in a thread pool: the tick must be a coroutine
    function, or it would race readings on the engine and the state file's connection."""
    assert inspect.iscoroutinefunction(Service._tick)


def test_flapping_marker_is_counted_not_published(tmp_path: Path) -> None:
    flappy = "rules:\n  - name: door\n    above: 0.5\n    flapping: {low: 0.2, high: 0.4}\n"
    service, _, registry = _service(tmp_path, flappy)
    out = []
    for i, value in enumerate([1, 0, 1, 0, 1, 0, 1, 0]):
        out += service.engine.evaluate(reading(value, i), i)
    statuses = [t.status for t in out]
    assert "flapping" in statuses
    assert service.pipeline is not None
    service.pipeline.commit(out, 10)
    published = len([s for s in statuses if s != "flapping"])
    assert service.outbox.conn.execute("SELECT count(*) FROM outbox").fetchone() == (published,)
    assert registry.get_sample_value("sensord_alerts_flapping_total", {"severity": "warning"}) == 1


def _http_service(
    tmp_path: Path, token: str | None
) -> tuple[Service, Path, CollectorRegistry, str]:
    """A Service whose HTTP server listens on a free port, with or without a token file."""
    rules_file = tmp_path / "rules" / "r.yaml"
    rules_file.parent.mkdir()
    rules_file.write_text("rules:\n  - name: a\n    above: 1\n")
    port = free_port()
    http = f'[http]\nlisten = "127.0.0.1:{port}"\n'
    if token is not None:
        (tmp_path / "token").write_text(token + "\n")
        http += 'token_file = "token"\n'
    config = tmp_path / "sensord.toml"
    config.write_text('[rules]\npaths = ["rules/*.yaml"]\n' + http)
    settings = load_settings(config, environ={})
    registry = CollectorRegistry()
    rules = load_rules(settings.rules.paths, settings.base_dir)
    service = Service(settings, rules, "edge", metrics=Metrics(registry))
    return service, rules_file, registry, f"http://127.0.0.1:{port}/-/reload"


async def _post(url: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.post(url, headers=headers) as r:
        return r.status, await r.json()


async def test_http_reload_needs_the_bearer_token(tmp_path: Path) -> None:
    service, rules_file, registry, url = _http_service(tmp_path, "s3cret")
    rules_file.write_text("rules:\n  - name: a\n    above: 1\n  - name: b\n    below: 0\n")
    await service.http.start()
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cre"}):
            status, body = await _post(url, headers)
            assert (status, body) == (401, {"error": "missing or wrong bearer token"})
            assert [r.name for r in service.engine.rules] == ["a"]  # unchanged
        assert registry.get_sample_value("sensord_rules_loaded") == 1
        status, body = await _post(url, {"Authorization": "Bearer s3cret"})
        assert (status, body) == (200, {"status": "reloaded"})
        assert [r.name for r in service.engine.rules] == ["a", "b"]
        assert registry.get_sample_value("sensord_rules_loaded") == 2
    finally:
        await service.http.stop()


async def test_http_reload_is_off_without_a_token_file(tmp_path: Path) -> None:
    """Like the other mutations: no `[http] token_file`, no reload over HTTP (SIGHUP still)."""
    service, rules_file, registry, url = _http_service(tmp_path, None)
    rules_file.write_text("rules:\n  - name: b\n    below: 0\n")
    await service.http.start()
    try:
        status, body = await _post(url, {"Authorization": "Bearer anything"})
        assert status == 403
        assert body == {"error": "mutations are disabled: set [http] token_file"}
        assert [r.name for r in service.engine.rules] == ["a"]
    finally:
        await service.http.stop()
    assert service.reload() == (True, [])  # what SIGHUP calls: no token involved
    assert [r.name for r in service.engine.rules] == ["b"]
    assert registry.get_sample_value("sensord_rules_loaded") == 1
