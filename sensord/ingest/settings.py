"""Settings of the MQTT ingest: `[mqtt]` (broker, topics, TLS), `[ingest]` (what is accepted)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from sensord.ingest import formats
from sensord.ingest.formats import FormatOptions
from sensord.ingest.units import Conversion
from sensord.ops.settings import Section, parse_duration

_FILTER_LEVEL = re.compile(r"[^+#]*|\+|#")


def check_topic_filter(v: str) -> str:
    """An MQTT topic filter: `+` and `#` as whole levels, `#` last only."""
    if not v:
        raise ValueError("a topic filter cannot be empty")
    levels = v.split("/")
    for i, level in enumerate(levels):
        if not _FILTER_LEVEL.fullmatch(level) or (level == "#" and i != len(levels) - 1):
            raise ValueError(
                f"topic filter {v!r}: '+' and '#' must be whole levels, '#' only the last"
            )
    return v


class SourceSettings(Section):
    """One `[[mqtt.sources]]` table: a payload format and the topics it reads.

    Keys other than the ones below are the format's own options (docs/formats/<format>.md),
    checked by the format itself when the config is loaded."""

    model_config = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=False)

    name: str | None = None  # names the source in logs, metrics, quarantine; default: format
    format: str
    topics: list[str] | None = None  # default: the firmware's own (the format's default_topics)
    site: str = Field(default="default", min_length=1)
    # topic-named formats (sensord, senml): topic -> site/device/kind; default [mqtt]'s
    topic_template: str | list[str] | None = None
    qos: Literal[0, 1, 2] | None = None  # default: [mqtt] qos
    max_sensors: int = Field(default=10_000, ge=1)  # sensors a format may learn

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        formats.get(v)  # UnknownFormatError (a ValueError) lists the known formats
        return v

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("give at least one topic filter, or leave topics out")
            for f in v:
                check_topic_filter(f)
        return v

    @field_validator("topic_template")
    @classmethod
    def _check_source_templates(cls, v: str | list[str] | None) -> str | list[str] | None:
        if v is None:
            return v
        return MqttSettings._check_templates(v)

    @model_validator(mode="after")
    def _check_options(self) -> SourceSettings:
        template = self.topic_template or "sensors/{site}/{device}/{kind}"
        # the format checks its own options (a ValueError names the key)
        fmt = formats.create(
            self.format,
            FormatOptions(template, 65536, options=self.options, source=self.source_name),
        )
        if self.topics is None and not getattr(fmt, "default_topics", ()):
            raise ValueError(f"format {self.format!r} has no default topics: give topics")
        return self

    @property
    def options(self) -> dict[str, object]:
        """The format's own keys: everything not a field of this table."""
        return dict(self.model_extra or {})

    @property
    def source_name(self) -> str:
        return self.name if self.name is not None else self.format


class MqttSettings(Section):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "sensord"
    # the source "sensord" (format "sensord"); [] when only [[mqtt.sources]] are read
    topics: list[str] = Field(default_factory=lambda: ["sensors/#"])
    # one template, or several tried in order (the first that matches wins)
    topic_template: str | list[str] = "sensors/{site}/{device}/{kind}"
    qos: Literal[0, 1, 2] = 1
    persistent_session: bool = True
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    # MQTT 5 only: how long the broker keeps the session while sensord is away
    session_expiry: float = 86400.0
    keepalive: int = Field(default=30, ge=5, le=3600)
    username: str | None = None
    password_file: Path | None = None
    max_payload: int = Field(default=65536, ge=16)
    # TLS (mqtts://): CA bundle to verify the broker, client certificate and key
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False  # true skips the host name check (never the chain)
    # more sources on the same connection: Zigbee2MQTT, Tasmota, … (docs/sources.md)
    sources: list[SourceSettings] = Field(default_factory=list)

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl"):
            raise ValueError("must be mqtt://host:port or mqtts://host:port")
        if not parts.hostname:
            raise ValueError("must name a host, e.g. mqtt://127.0.0.1:1883")
        return v

    @field_validator("session_expiry", mode="before")
    @classmethod
    def _expiry(cls, v: object) -> float:
        seconds = parse_duration(v)
        if seconds > 0xFFFFFFFF:
            raise ValueError("at most 4294967295 seconds (MQTT 5 session expiry interval)")
        return seconds

    @field_validator("topics")
    @classmethod
    def _check_native_topics(cls, v: list[str]) -> list[str]:
        for f in v:
            check_topic_filter(f)
        return v

    @model_validator(mode="after")
    def _check_sources(self) -> MqttSettings:
        if not self.topics and not self.sources:
            raise ValueError("topics is empty and no [[mqtt.sources]] is given: nothing to read")
        names = ["sensord"] if self.topics else []
        for s in self.sources:
            if s.source_name in names:
                raise ValueError(
                    f"two sources are named {s.source_name!r}: give each [[mqtt.sources]] "
                    "its own name (the [mqtt] topics are the source 'sensord')"
                )
            names.append(s.source_name)
        return self

    @model_validator(mode="after")
    def _check_tls(self) -> MqttSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.tls and (self.ca_file or self.cert_file or self.tls_insecure):
            raise ValueError("ca_file, cert_file, key_file and tls_insecure need an mqtts:// url")
        return self

    @field_validator("topic_template")
    @classmethod
    def _check_templates(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one topic template")
            for template in v:
                cls._check_template(template)
            return v
        return cls._check_template(v)

    @property
    def templates(self) -> list[str]:
        return (
            [self.topic_template] if isinstance(self.topic_template, str) else self.topic_template
        )

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @staticmethod
    def _check_template(v: str) -> str:
        names = re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", v)
        missing = {"site", "device", "kind"} - set(names)
        if missing:
            raise ValueError(
                f"must contain the segments {{site}}, {{device}} and {{kind}}; "
                f"missing {', '.join(sorted(missing))}"
            )
        for segment in v.split("/"):
            if "{" in segment and not re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}", segment):
                raise ValueError(f"segment {segment!r}: a named segment must be a whole level")
        return v

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def safe_url(self) -> str:
        """The URL for logs: any password in it replaced by ***."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password): `username` + `password_file` win over the URL's user:pass."""
        parts = urlsplit(self.url)
        username = self.username if self.username is not None else parts.username
        password = parts.password
        if self.password_file is not None:
            password = self.password_file.read_text(encoding="utf-8").strip()
        return username, password

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


class IngestSettings(Section):
    """What the bridge accepts, and where refused messages go."""

    # a reading stamped further ahead of the receive time is refused (clock_skew)
    max_clock_skew: float = 300.0
    # kind -> target unit, e.g. temperature = "C": readings in F or K are converted
    units: dict[str, str] = Field(default_factory=dict)
    # refused messages waiting for RabbitMQ; beyond it the oldest is dropped and counted
    quarantine_max_pending: int = Field(default=10_000, ge=1)
    # payload bytes kept in a quarantined message
    quarantine_max_payload: int = Field(default=4096, ge=0, le=1_048_576)
    # sensors whose last reading time is remembered to skip QoS 1 redeliveries
    dedup_sensors: int = Field(default=100_000, ge=0)

    @field_validator("max_clock_skew", mode="before")
    @classmethod
    def _skew(cls, v: object) -> float:
        seconds = parse_duration(v)
        if seconds <= 0:
            raise ValueError("must be more than 0")
        return seconds

    @field_validator("units")
    @classmethod
    def _check_units(cls, v: dict[str, str]) -> dict[str, str]:
        for unit in v.values():
            Conversion(unit)  # ValueError names the known units
        return v
