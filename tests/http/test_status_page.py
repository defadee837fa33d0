"""The status page in a real browser: headless Debian Chromium driven by Playwright.

sensord runs as a subprocess fed by the simulator (or a publisher) over the real Mosquitto,
notifications go through the real RabbitMQ to a real webhook sink. Screenshots land in
`.artifacts/status-page/` (git-ignored; $SENSORD_TEST_ARTIFACTS to put them elsewhere).
Playwright never downloads a browser here: it drives /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.support import (
    MqttPublisher,
    SensordProcess,
    SimProcess,
    WebhookSink,
    delete_mqtt_session,
    running,
    uid,
    wait_for,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("SENSORD_TEST_ARTIFACTS", ROOT / ".artifacts")) / "status-page"
TOKEN = "page-t0ken"  # noqa: S105 - a test token, not a secret
RULES = """
rules:
  - name: critical-temperature
    match: {kind: temperature}
    above: 80
    clear_below: 75
    severity: critical
    annotations:
      summary: "{site}/{device} temperature {value:.1f} above {threshold:g}"
"""

HEATWAVE_30S = """
name: heatwave-30s
repeat: 30s
events:
  - {at: 3s, event: hvac_failure, site: plant-1, devices: [t-1, t-2], setpoint: 91}
  - {at: 18s, event: recover, site: plant-1}
"""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is missing (Debian: apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        await b.close()


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def _is_png(path: Path) -> bool:
    return path.stat().st_size > 10_000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def _api(sensord: SensordProcess, path: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(sensord.base_url + path) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def _sent(webhook: WebhookSink, device: str, status: str) -> list[dict[str, Any]]:
    return [a for a in webhook.alerts(status) if a["labels"]["device"] == device]


def _row(device: str) -> str:
    return (
        '#alerts-table tr[data-rule="critical-temperature"]'
        f'[data-sensor="plant-1/{device}/temperature"]'
    )


async def _until(check: Any, timeout: float) -> Any:
    """Poll an async check until it returns something truthy; that value is returned."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {check.__name__}")


async def _ack_from_page(page: Page, sensord: SensordProcess, device: str) -> dict[str, Any]:
    """Click Ack on the device's alert; the token is asked for once. The API's alert."""
    await page.locator(_row(device)).locator("button.ack").click()
    await page.wait_for_selector("#token-dialog[open]")
    await page.fill("#token-input", TOKEN)
    await page.click("#token-ok")

    async def acked() -> dict[str, Any] | None:
        alerts = (await _api(sensord, "/api/v1/alerts"))["alerts"]
        hit = [a for a in alerts if a["labels"]["device"] == device and a["acked_by"]]
        return hit[0] if hit else None

    alert: dict[str, Any] = await _until(acked, timeout=15)
    assert alert["acked_by"] == "status page"
    await page.wait_for_selector(_row(device) + " .badge.acked")
    return alert


async def _silence_from_page(page: Page, sensord: SensordProcess, device: str) -> dict[str, Any]:
    """Silence the device's alert from its row, matchers pre-filled. The API's silence."""
    await page.locator(_row(device)).locator("button.silence").click()
    await page.wait_for_selector("#silence-dialog[open]")
    matchers = await page.input_value("#silence-matchers")
    assert matchers.splitlines() == [
        "alertname=critical-temperature",
        "site=plant-1",
        f"device={device}",
        "kind=temperature",
    ]
    await page.select_option("#silence-duration", "4h")
    await page.fill("#silence-comment", "heatwave drill")
    await page.click("#silence-ok")  # the token is remembered: no second prompt
    await page.wait_for_selector("#silence-dialog[open]", state="detached")
    assert await page.locator("#token-dialog[open]").count() == 0
    silences = (await _api(sensord, "/api/v1/silences"))["silences"]
    assert len(silences) == 1
    silence: dict[str, Any] = silences[0]
    assert silence["comment"] == "heatwave drill"
    assert silence["author"] == "status page"
    assert silence["matchers"] == matchers.splitlines()
    assert 4 * 3600 - 60 < silence["ends_at"] - silence["starts_at"] <= 4 * 3600
    await page.wait_for_selector(_row(device) + " .badge.suppressed")
    return silence


async def _detail_screenshot(page: Page, sensor_id: str) -> Path:
    """Open a sensor's detail: its plot with the rule's thresholds drawn. The screenshot."""
    await page.locator(f'#sensors-table tr[data-sensor="{sensor_id}"] button.link').click()
    await page.wait_for_selector("#plot .uplot canvas")
    legend = await page.locator("#thresholds").inner_text()
    assert "critical-temperature: above 80" in legend
    assert "clear below 75" in legend
    path = _artifact("sensor-detail.png")
    await page.locator("#detail").screenshot(path=str(path))
    return path


@pytest.mark.timeout(240)
async def test_heatwave_live_on_the_page_then_ack_and_silence_from_it(
    sensord: SensordProcess, webhook: WebhookSink, browser: Browser
) -> None:
    (sensord.workdir / "token").write_text(TOKEN + "\n")
    sensord.rules_yaml = RULES
    sensord.channels = [{"name": "hook", "type": "webhook", "url": webhook.url}]
    sensord.extra_toml = 'token_file = "token"\n\n[alerts]\nrepeat_interval = 0\n'
    async with running(sensord):
        # bypass_csp: Playwright's wait_for_function evaluates strings, which the page's
        # CSP forbids (no 'unsafe-eval'); the CSP itself is checked in test_status_api
        page = await browser.new_page(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        navigations: list[str] = []
        page.on("framenavigated", lambda frame: navigations.append(frame.url))
        await page.goto(sensord.base_url + "/")
        await page.wait_for_selector("#alerts-empty:not([hidden])")  # nothing yet
        assert await page.locator("#sensors-table tr.sensor").count() == 0

        # the builtin heatwave on a 30 s cycle instead of 60 (the test waits for a second
        # one): hot from 3 s to 18 s, so above 80 by ~6 s and below 75 by ~19 s
        scenario = sensord.workdir / "heatwave-30s.yaml"
        scenario.write_text(HEATWAVE_30S, encoding="utf-8")
        sim = SimProcess.spawn(  # runs beside sensord, stopped below
            *("--topic-root", sensord.topic_root, "--sites", "2", "--sensors", "3"),
            *("--rate", "2", "--scenario", str(scenario), "--quiet"),
            *("--client-id", f"simtest-pub-{uid()}"),
        )
        try:
            # the page lists the sensors, grouped by site, without a reload
            await page.wait_for_function(
                "document.querySelectorAll('#sensors-table tr.sensor').length === 6",
                timeout=20_000,
            )
            sites = await page.locator("#sensors-table tr.site").all_inner_texts()
            assert sites == ["plant-1", "plant-2"]
            # the heatwave alert appears live (t-1 and t-2 of plant-1 cross 80 ~6 s in)
            await page.wait_for_selector(_row("t-1"), timeout=40_000)
            await page.wait_for_selector(_row("t-2"), timeout=20_000)
            assert navigations == [sensord.base_url + "/"]  # never reloaded
            assert "critical" in await page.locator(_row("t-1")).inner_text()
            await page.wait_for_function(
                "document.getElementById('ov-alerts').textContent.startsWith('2 crit')"
            )
            shot = _artifact("overview.png")
            await page.screenshot(path=str(shot), full_page=True)

            acked = await _ack_from_page(page, sensord, "t-1")
            silence = await _silence_from_page(page, sensord, "t-2")
            detail = await _detail_screenshot(page, "plant-1/t-1/temperature")

            # the next heatwave (30 s cycle): t-1 notifies again, the silenced t-2 is held
            await wait_for(lambda: len(_sent(webhook, "t-1", "firing")) >= 2, timeout=100)

            async def t2_held_again() -> dict[str, Any] | None:
                alerts = (await _api(sensord, "/api/v1/alerts"))["alerts"]
                hit = [
                    a
                    for a in alerts
                    if a["labels"]["device"] == "t-2" and a["starts_at"] > acked["starts_at"]
                ]
                return hit[0] if hit else None

            held = await _until(t2_held_again, timeout=30)
            assert held["notified"] is False
            assert held["silenced_by"] == silence["id"]
            assert held["state"] == "suppressed"
        finally:
            sim.stop()  # SIGTERM; killed if it outlives 15 s
            await page.close()
        assert sim.returncode == 0, sim.err
        assert await sensord.stop() == 0
    delete_mqtt_session(f"sensord-test-{sensord.prefix}")
    # first episode: both notified (firing, resolved); second: only t-1's firing
    assert len(_sent(webhook, "t-2", "firing")) == 1
    assert len(_sent(webhook, "t-1", "firing")) >= 2
    assert errors == []
    assert _is_png(shot)
    assert _is_png(detail)


@pytest.mark.timeout(120)
async def test_the_page_requests_nothing_outside_the_sensord_origin(
    sensord: SensordProcess, mqtt_pub: MqttPublisher, browser: Browser
) -> None:
    (sensord.workdir / "token").write_text(TOKEN + "\n")
    sensord.rules_yaml = RULES
    sensord.extra_toml = 'token_file = "token"\n'
    async with running(sensord):
        for site, device, value in (("plant-1", "t-1", 95), ("plant-2", "t-7", 21.5)):
            topic = f"{sensord.topic_root}/{site}/{device}/temperature"
            mqtt_pub.publish(topic, json.dumps({"value": value, "unit": "C"}))
        # a phone, in dark mode: every request the page makes, whatever its kind
        context = await browser.new_context(
            viewport={"width": 390, "height": 844},
            is_mobile=True,
            has_touch=True,
            color_scheme="dark",
            # without the CSP's help: what is proven is that the page itself asks for
            # nothing elsewhere, not only that the browser would refuse it
            bypass_csp=True,
        )
        requests: list[str] = []
        context.on("request", lambda req: requests.append(req.url))
        page = await context.new_page()
        try:
            await page.goto(sensord.base_url + "/")
            await page.wait_for_selector(_row("t-1"))
            await page.wait_for_function(
                "document.querySelectorAll('#sensors-table tr.sensor').length === 2"
            )
            # the silence dialog, by keyboard: Tab to the button, Enter, Escape closes it
            await page.locator(_row("t-1")).locator("button.silence").focus()
            await page.keyboard.press("Enter")
            await page.wait_for_selector("#silence-dialog[open]")
            await page.keyboard.press("Escape")
            await page.wait_for_selector("#silence-dialog[open]", state="detached")
            await page.locator(
                '#sensors-table tr[data-sensor="plant-2/t-7/temperature"] button.link'
            ).click()
            await page.wait_for_selector("#plot .uplot canvas")
            # several polling rounds of every kind
            await page.wait_for_function(
                "performance.getEntriesByType('resource')"
                ".filter(e => e.name.includes('/api/v1/overview')).length >= 3",
                timeout=20_000,
            )
            shot = _artifact("overview-phone-dark.png")
            await page.screenshot(path=str(shot), full_page=True)
        finally:
            await context.close()
        assert await sensord.stop() == 0
    origin = sensord.base_url + "/"
    network = [u for u in requests if not u.startswith("data:")]
    assert [u for u in network if not u.startswith(origin)] == []
    paths = {u.removeprefix(origin).split("?")[0] for u in network}
    assert {
        "",
        "static/app.js",
        "static/vendor/uPlot.iife.min.js",
        "api/v1/overview",
        "api/v1/alerts",
        "api/v1/sensors",
        "api/v1/sensors/plant-2/t-7/temperature/history",
    } <= paths
    assert _is_png(shot)
