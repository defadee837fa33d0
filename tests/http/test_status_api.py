"""The status page's JSON and assets, from a real sensord fed over the real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from sensord.http.settings import HttpSettings
from tests.support import MqttPublisher, SensordProcess, running

RULES = """
rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    clear_below: 75
    severity: critical
  - name: humid-average
    match: {kind: humidity}
    outside: [20, 70]
    aggregate: {fn: avg, window: 1m}
    severity: warning
  - name: humidity-silent
    match: {kind: humidity}
    absent_for: 1s
    severity: warning
"""


async def _json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def _until(check: Any, timeout: float = 15.0) -> None:
    """Await an async predicate until it holds (support.wait_for takes a plain one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {check.__name__}")


async def _alert_counts_follow_ack_and_silence(http: aiohttp.ClientSession, base: str) -> None:
    """The overview counts the alert by severity, then as acked, then as silenced."""

    async def critical() -> bool:
        ov = await _json(http, f"{base}/api/v1/overview")
        return bool(ov["alerts"]["by_severity"]["critical"] == 1)

    await _until(critical)
    alerts = (await _json(http, f"{base}/api/v1/alerts"))["alerts"]
    auth = {"Authorization": "Bearer tok"}
    url = f"{base}/api/v1/alerts/{alerts[0]['fingerprint']}/ack"
    async with http.post(url, json={}, headers=auth) as r:
        assert r.status == 200
    body = {"matchers": ["device=t-1"], "duration": "1h"}
    async with http.post(f"{base}/api/v1/silences", json=body, headers=auth) as r:
        assert r.status == 201
    # the humidity deadman fires too (a warning): only the critical one is acked and silenced
    expected = {
        "by_severity": {"critical": 1, "warning": 1, "info": 0},
        "acked": 1,
        "suppressed": 1,
    }

    async def counted() -> bool:
        ov = await _json(http, f"{base}/api/v1/overview")
        return bool(ov["alerts"] == expected)

    await _until(counted)


@pytest.mark.e2e
async def test_sensors_history_and_overview_follow_the_readings(
    sensord: SensordProcess, mqtt_pub: MqttPublisher
) -> None:
    sensord.rules_yaml = RULES
    sensord.extra_toml = 'silent_after = "1h"\ntoken_file = "token"\n'
    (sensord.workdir / "token").write_text("tok\n")
    root = sensord.topic_root
    async with running(sensord), aiohttp.ClientSession() as http:
        base = sensord.base_url
        for value in (20, 25.5, 22):
            mqtt_pub.publish(f"{root}/plant-1/t-1/temperature", json.dumps({"value": value}))
        mqtt_pub.publish(f"{root}/plant-2/h-1/humidity", json.dumps({"value": 40, "unit": "%"}))
        mqtt_pub.publish(f"{root}/plant-2/h-1/humidity", b"not a reading")

        async def sensors(query: str = "") -> dict[str, Any]:
            data: dict[str, Any] = await _json(http, f"{base}/api/v1/sensors{query}")
            return data

        got: dict[str, Any] = {}

        async def both_reported() -> bool:
            got.update(await sensors("?limit=10"))
            return bool(got["total"] == 2 and got["sensors"][0]["value"] == 22)

        await _until(both_reported)
        temp, hum = got["sensors"]  # sorted by site, device, kind
        assert temp["id"] == "plant-1/t-1/temperature"
        assert (temp["value"], temp["unit"]) == (22, None)
        assert (hum["value"], hum["unit"]) == (40, "%")
        assert len(temp["spark"]) == 120  # one hour of 30 s buckets by default
        assert temp["spark"][-1] == 22  # the last value of the current bucket
        assert temp["silent"] is False  # no deadman rule for it, silent_after is 1 h
        assert got["step"] == 30

        # filters: a glob or an exact value per label
        assert [s["id"] for s in (await sensors("?kind=hum*"))["sensors"]] == [hum["id"]]
        assert (await sensors("?site=plant-1&device=t-1"))["total"] == 1
        assert (await sensors("?site=plant"))["total"] == 0

        history = await _json(http, f"{base}/api/v1/sensors/{temp['id']}/history")
        assert history["points"][-1][1:] == [20, 25.5, 22]  # min, max, last of the bucket
        assert {(t["rule"], t["op"], t["value"]) for t in history["thresholds"]} == {
            ("hot", "above", 80),
            ("hot", "clear_below", 75),
        }
        hum_history = await _json(http, f"{base}/api/v1/sensors/{hum['id']}/history")
        assert {(t["op"], t["value"], t["on"]) for t in hum_history["thresholds"]} == {
            ("outside_low", 20, "avg over 60s"),
            ("outside_high", 70, "avg over 60s"),
        }
        async with http.get(f"{base}/api/v1/sensors/plant-9/x/temperature/history") as r:
            assert r.status == 404

        # the humidity sensor's deadman (absent_for 1s) marks it silent; the other reports
        overview: dict[str, Any] = {}

        async def one_silent() -> bool:
            overview.update(await _json(http, f"{base}/api/v1/overview"))
            return bool(overview["sensors"]["silent"] == 1)

        await _until(one_silent)
        assert overview["sensors"] == {
            "total": 2,
            "reporting": 1,
            "silent": 1,
            "untracked_readings": 0,
        }
        assert overview["invalid_5m"] == 1
        assert overview["mqtt"]["connected"] is True
        assert overview["amqp"]["connected"] is True
        assert overview["outbox_pending"] == 0
        assert overview["alerts"]["by_severity"]["critical"] == 0
        silent = await sensors("?silent=true")
        assert [s["id"] for s in silent["sensors"]] == [hum["id"]]
        assert silent["sensors"][0]["silent"] is True

        mqtt_pub.publish(f"{root}/plant-1/t-1/temperature", b"95")
        await _alert_counts_follow_ack_and_silence(http, base)
        assert await sensord.stop() == 0


@pytest.mark.e2e
async def test_page_assets_etags_and_headers(sensord: SensordProcess) -> None:
    sensord.rules_yaml = RULES
    async with running(sensord), aiohttp.ClientSession() as http:
        base = sensord.base_url
        async with http.get(base + "/") as r:
            assert r.status == 200
            html = await r.text()
            csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp
        assert "connect-src 'self'" in csp
        links = re.findall(r'(?:src|href)="([^"]*)"', html)
        assert "static/app.js" in links
        assert "static/vendor/uPlot.iife.min.js" in links
        # every asset from this origin, by a relative path (works behind a path prefix too)
        assert [u for u in links if re.match(r"^(?:[a-z]+:(?!,)|//|/)", u)] == [], links
        for asset in links:
            if asset.startswith("static/"):
                async with http.get(f"{base}/{asset}") as r:
                    assert r.status == 200, asset
        async with http.get(base + "/static/vendor/uPlot.LICENSE") as r:
            assert "MIT" in await r.text()
        async with http.get(base + "/static/../http.py") as r:
            assert r.status in (403, 404)

        # JSON reads carry an ETag; a poll with If-None-Match gets 304 and no body
        async with http.get(base + "/api/v1/alerts") as r:
            etag = r.headers["ETag"]
        async with http.get(base + "/api/v1/alerts", headers={"If-None-Match": etag}) as r:
            assert r.status == 304
            assert await r.read() == b""
        async with http.get(base + "/api/v1/alerts", headers={"If-None-Match": '"x"'}) as r:
            assert r.status == 200
            assert r.headers["ETag"] == etag
        assert await sensord.stop() == 0


@pytest.mark.e2e
async def test_a_notify_role_says_where_the_sensors_are(sensord: SensordProcess) -> None:
    sensord.role = "notify"
    async with running(sensord, ready=False), aiohttp.ClientSession() as http:
        await sensord.wait_ready()
        async with http.get(sensord.base_url + "/api/v1/sensors") as r:
            assert r.status == 503
            assert "edge" in (await r.json())["error"]
        overview = await _json(http, sensord.base_url + "/api/v1/overview")
        assert overview["role"] == "notify"
        assert overview["mqtt"] is None
        assert overview["sensors"]["total"] == 0
        assert await sensord.stop() == 0


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"history_step": "0s"}, "history_step"),
        ({"history_window": "10s"}, "history_window must be at least"),
        ({"history_window": "1d", "history_step": "1s"}, "1440 buckets"),
        ({"silent_after": 0}, "silent_after"),
    ],
)
def test_history_settings_are_checked(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HttpSettings.model_validate(keys)
