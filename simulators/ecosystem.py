"""`sensord-sim --format zigbee2mqtt|tasmota|shelly|…`: devices of a real ecosystem.

Each simulated device (simulators/devices/) carries one sensor per `--kinds` kind, with the
same physics and scenarios as the native simulator: device `i` of site `s` reads the models
of sensors `<prefix>-i` of `s` (so `--scenario heatwave`, which heats plant-1's t-1 and
t-2, heats the temperature of devices 1 and 2 of plant-1). Devices are named
`<site>-dev-<i>` and publish as their firmware does: `birth()` once at the start (retained
discovery configs, Sparkplug births, availability online), `state()` at `--rate` reports
per second, `death()` at the end (availability offline, NDEATH).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from simulators import devices
from simulators.broker import BrokerUnavailableError, BrokerUrl
from simulators.physics import KINDS, SensorModel, make_sensor
from simulators.runner import Summary
from simulators.scenario import Scenario, Timeline

# the native simulator's kinds -> the shared kinds the device formats speak
SHARED_KIND = {"door": "contact"}


@dataclass(frozen=True, slots=True)
class EcosystemConfig:
    fmt: str
    url: BrokerUrl
    client_id: str
    qos: int
    sites: int
    devices: int
    kinds: tuple[str, ...]
    rate: float  # reports per device per second
    seed: int
    scenario: Scenario | None
    count: int  # reports in all; 0 = no limit
    duration_s: float | None
    tls: ssl.SSLContext | None = None
    prefix: str = ""  # put before every topic the firmware uses ("" = none)


class _Device:
    __slots__ = ("device", "models")

    def __init__(self, device: devices.Device, models: dict[str, SensorModel]) -> None:
        self.device, self.models = device, models


def build(cfg: EcosystemConfig) -> list[_Device]:
    factory = devices.get(cfg.fmt)
    timeline = Timeline(cfg.scenario)
    out = []
    for s in range(1, cfg.sites + 1):
        site = f"plant-{s}"
        for i in range(1, cfg.devices + 1):
            models = {
                SHARED_KIND.get(kind, kind): make_sensor(
                    KINDS[kind],
                    site=site,
                    device=f"{KINDS[kind].prefix}-{i}",
                    topic="",
                    seed=cfg.seed,
                    timeline=timeline,
                )
                for kind in cfg.kinds
            }
            out.append(_Device(factory(f"{site}-dev-{i}", site), models))
    return out


class _Client:
    """One paho connection with its own network thread; counts what it sent."""

    def __init__(self, cfg: EcosystemConfig) -> None:
        self.qos = cfg.qos
        self.prefix = cfg.prefix + "/" if cfg.prefix else ""
        self.sent = self.errors = 0
        self.mqtt = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            clean_session=True,
        )
        if cfg.url.username is not None:
            self.mqtt.username_pw_set(cfg.url.username, cfg.url.password)
        if cfg.tls is not None:
            self.mqtt.tls_set_context(cfg.tls)
        self.mqtt.max_inflight_messages_set(1000)
        try:
            self.mqtt.connect(cfg.url.host, cfg.url.port)
        except OSError as exc:
            raise BrokerUnavailableError(f"cannot connect to {cfg.url}: {exc}") from None
        self.mqtt.loop_start()

    def send(self, messages: list[devices.Msg]) -> None:
        for topic, payload, qos, retain in messages:
            info = self.mqtt.publish(self.prefix + topic, payload, min(qos, self.qos), retain)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self.sent += 1
            else:
                self.errors += 1

    def close(self) -> None:
        deadline = time.monotonic() + 10
        while self.mqtt.want_write() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # the last PUBACKs
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


def _values(d: _Device, t: float) -> dict[str, float]:
    values = {}
    for kind, model in d.models.items():
        if t >= model.cond_until:
            model.refresh(t)
        cond = model.cond
        if not cond.silent:  # a scenario's dropout
            values[kind] = model.measure(t) if cond.flap is None else model.read(t)
    return values


def run(
    cfg: EcosystemConfig, stop: Callable[[], bool], on_connected: Callable[[], None] | None = None
) -> Summary:
    """Publish until `stop()`, `count` reports or `duration_s`; returns the summary."""
    fleet = build(cfg)
    client = _Client(cfg)
    reports = 0
    start = time.monotonic()
    try:
        for d in fleet:
            client.send(d.device.birth())
        if on_connected is not None:
            on_connected()
        next_at = start
        while not stop():
            now = time.time()
            t = time.monotonic() - start  # the physics and scenarios count from the start
            for d in fleet:
                values = _values(d, t)
                if values:
                    client.send(d.device.state(values, now))
                reports += 1
                if reports == cfg.count:
                    break
            if reports == cfg.count or (
                cfg.duration_s is not None and time.monotonic() - start >= cfg.duration_s
            ):
                break
            next_at += 1.0 / cfg.rate
            while not stop() and time.monotonic() < next_at:
                time.sleep(min(0.05, max(0.0, next_at - time.monotonic())))
        for d in fleet:
            client.send(d.device.death())
    finally:
        client.close()
    elapsed = time.monotonic() - start
    return Summary(
        sent=client.sent, errors=client.errors, elapsed_s=elapsed,
        rate=client.sent / elapsed if elapsed else 0.0, qos=cfg.qos,
    )  # fmt: skip
