"""Typed settings: TOML file + `SENSORD_SECTION__KEY` environment overrides.

Keys are a contract (ARCHITECTURE.md). Unknown keys are errors naming the file, line and key.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sensord.errors import ConfigError, Problem

ENV_PREFIX = "SENSORD_"
CONFIG_ENV = "SENSORD_CONFIG"
DEFAULT_CONFIG_PATHS = (Path("/etc/sensord/sensord.toml"), Path("sensord.toml"))

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_duration(value: object) -> float:
    """`"500ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"` or a bare number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '5s'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"invalid duration {value!r}: use a number and a unit, e.g. '5s', '2m'")
    if not math.isfinite(seconds):  # TOML nan/inf, YAML .nan/.inf, or a huge digit string
        raise ValueError(f"invalid duration {value!r}: must be finite")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


# a float of seconds, written as a number or text with a unit ("500ms", "5s", "2m")
Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    # coerce_numbers_to_str: env values parse as JSON, so SENSORD_MQTT__CLIENT_ID=123 is an int
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class MqttSettings(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "sensord"
    topics: list[str] = Field(default_factory=lambda: ["sensors/#"], min_length=1)
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


class IngestSettings(_Section):
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
        from sensord.ingest.units import Conversion  # noqa: PLC0415 - units imports nothing of config

        for unit in v.values():
            Conversion(unit)  # ValueError names the known units
        return v


class AmqpSettings(_Section):
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    prefix: str = "sensord"
    reconnect_interval: float = Field(default=2.0, gt=0)
    publish_timeout: float = Field(default=10.0, gt=0)
    max_pending: int = Field(default=100_000, ge=1)
    # on SIGTERM: keep trying to publish held alert events for up to this long
    stop_grace: Duration = 5.0

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError("only letters, digits, '_', '-' and '.' are allowed")
        return v

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.alerts"

    def notify_queue(self, channel: str) -> str:
        return f"{self.prefix}.notify.{channel}"

    def dead_queue(self, channel: str) -> str:
        return f"{self.prefix}.notify.{channel}.dead"


class RulesSettings(_Section):
    paths: list[str] = Field(default_factory=lambda: ["rules/*.yaml"])
    tick: float = Field(default=1.0, gt=0, le=60)
    # a downtime longer than this restarts `for` timers and deadman clocks (restore)
    outage_tolerance: Duration = 3600.0


class StateSettings(_Section):
    path: Path = Path("var/sensord.db")


class InhibitSettings(_Section):
    source: list[str] = Field(min_length=1)
    target: list[str] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list)

    @field_validator("source", "target")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        from sensord.alerts.silences import Matcher  # noqa: PLC0415 - avoid an import cycle

        for text in v:
            Matcher.parse(text)
        return v


class AlertsSettings(_Section):
    # re-announce a firing alert that is not acknowledged this often; 0 disables
    repeat_interval: Duration = 4 * 3600.0
    inhibit: list[InhibitSettings] = Field(default_factory=list)


class HttpSettings(_Section):
    listen: str = "127.0.0.1:9300"
    # bearer token for mutations (ack, silences); without it they are refused
    token_file: Path | None = None
    # the status page's recent history per sensor (in memory): how far back, how coarse
    history_window: Duration = 3600.0
    history_step: Duration = 30.0
    # a sensor no deadman rule covers is marked silent on the page after this long
    silent_after: Duration = 300.0

    @model_validator(mode="after")
    def _check_history(self) -> HttpSettings:
        if self.history_step <= 0:
            raise ValueError("history_step must be longer than 0s")
        if self.history_window < self.history_step:
            raise ValueError("history_window must be at least history_step")
        if self.history_window / self.history_step > 1440:
            raise ValueError(
                "history_window / history_step must be at most 1440 buckets per sensor"
            )
        if self.silent_after <= 0:
            raise ValueError("silent_after must be longer than 0s")
        return self

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, v: str) -> str:
        if v == "":
            return v  # disabled
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError('must be host:port, e.g. 127.0.0.1:9300 (or "" to disable)')
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class RetrySettings(_Section):
    max_attempts: int = Field(default=3, ge=1, le=100)
    delay: Duration = 5.0
    max_delay: Duration = 300.0


SeverityName = Literal["critical", "warning", "info"]


def _all_severities() -> list[SeverityName]:
    return ["critical", "warning", "info"]


# Fields a channel's message templates may use (str.format syntax, e.g. "{value:.1f}").
TEMPLATE_FIELDS = (
    "status",
    "STATUS",
    "severity",
    "rule",
    "site",
    "device",
    "kind",
    "value",
    "threshold",
    "summary",
    "fingerprint",
    "event_id",
    "starts_at",
    "ends_at",
    "time",
    "channel",
    "count",
)


def check_template(template: str) -> str:
    """Fail at load time, not at the first alert, on a template that cannot be rendered."""
    sample: dict[str, object] = dict.fromkeys(TEMPLATE_FIELDS, "x")
    sample.update(value=1.5, threshold=1.0, count=1)
    try:
        template.format_map(sample)
    except KeyError as exc:
        raise ValueError(
            f"unknown template field {exc}; known: {', '.join(TEMPLATE_FIELDS)}"
        ) from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise ValueError(f"invalid template: {exc}") from None
    return template


class ChannelMatch(_Section):
    """Label globs (fnmatch) on the alert's site and kind."""

    site: str = "*"
    kind: str = "*"


class RateLimitSettings(_Section):
    """Token bucket: `rate` notifications per second on average, bursts of `burst`."""

    rate: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)


class _ChannelBase(_Section):
    name: str
    severities: list[SeverityName] = Field(default_factory=_all_severities, min_length=1)
    send_resolved: bool = True
    retry: RetrySettings = Field(default_factory=RetrySettings)
    prefetch: int = Field(default=16, ge=1, le=10_000)
    match: ChannelMatch | None = None
    rate_limit: RateLimitSettings | None = None
    # re-announce a firing, unacknowledged alert this often; None: [alerts] repeat_interval
    repeat_interval: Duration | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError("only letters, digits, '_' and '-' are allowed")
        return v


def _http_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return v


class ConsoleChannelSettings(_ChannelBase):
    type: Literal["console"]
    template: str | None = None  # None: the built-in line (docs/channels.md)

    @field_validator("template")
    @classmethod
    def _check_template(cls, v: str | None) -> str | None:
        return None if v is None else check_template(v)


class FileChannelSettings(_ChannelBase):
    type: Literal["file"]
    path: Path
    fsync: bool = False


class WebhookChannelSettings(_ChannelBase):
    type: Literal["webhook"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = 10.0
    hmac_secret_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return _http_url(v)


DEFAULT_SLACK_TEMPLATE = (
    "{STATUS} [{severity}] {rule} on {site}/{device}: {summary}"
    " (value {value}, threshold {threshold})"
)


class SlackChannelSettings(_ChannelBase):
    type: Literal["slack"]
    url: str
    timeout: Duration = 10.0
    template: str = DEFAULT_SLACK_TEMPLATE

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return _http_url(v)

    @field_validator("template")
    @classmethod
    def _check_template(cls, v: str) -> str:
        return check_template(v)


class MqttChannelSettings(_ChannelBase):
    type: Literal["mqtt"]
    url: str = "mqtt://127.0.0.1:1883"
    topic_template: str = "alerts/{site}/{device}"
    qos: Literal[0, 1, 2] = 1
    retain: bool = False
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError("must be mqtt://host:port")
        return v

    @field_validator("topic_template")
    @classmethod
    def _check_topic(cls, v: str) -> str:
        check_template(v)
        if "+" in v or "#" in v:
            raise ValueError("a topic to publish to cannot contain the wildcards + or #")
        return v

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 1883


DEFAULT_EMAIL_SUBJECT = "[{STATUS}] {rule} on {site}/{device}"
DEFAULT_EMAIL_BODY = (
    "{STATUS} {severity} {rule}\n"
    "sensor: {site}/{device} ({kind})\n"
    "value: {value}  threshold: {threshold}\n"
    "summary: {summary}\n"
    "since: {starts_at}  ended: {ends_at}\n"
    "fingerprint: {fingerprint}\n"
)


class EmailChannelSettings(_ChannelBase):
    type: Literal["email"]
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "none"
    ca_file: Path | None = None  # CA bundle to verify the server with (default: system CAs)
    username: str | None = None
    password_file: Path | None = None
    sender: str
    to: list[str] = Field(min_length=1)
    subject_template: str = DEFAULT_EMAIL_SUBJECT
    body_template: str = DEFAULT_EMAIL_BODY
    group_wait: Duration = 0.0
    timeout: Duration = 30.0

    @field_validator("subject_template", "body_template")
    @classmethod
    def _check_template(cls, v: str) -> str:
        return check_template(v)


class AlertmanagerChannelSettings(_ChannelBase):
    type: Literal["alertmanager"]
    url: str  # base URL, e.g. http://127.0.0.1:9093
    resend_interval: Duration = 60.0
    resolved_retention: Duration = 900.0
    timeout: Duration = 10.0
    generator_url: str = ""

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        return _http_url(v).rstrip("/")


ChannelSettings = Annotated[
    ConsoleChannelSettings
    | FileChannelSettings
    | WebhookChannelSettings
    | SlackChannelSettings
    | MqttChannelSettings
    | EmailChannelSettings
    | AlertmanagerChannelSettings,
    Field(discriminator="type"),
]
CHANNEL_TYPES = ("console", "file", "webhook", "slack", "mqtt", "email", "alertmanager")
# channel keys naming files that must exist when the config is loaded (secrets, CA bundle)
CHANNEL_FILE_KEYS = ("hmac_secret_file", "password_file", "ca_file")


class Settings(_Section):
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    channels: list[ChannelSettings] = Field(default_factory=list)
    # Directory that relative paths in the file are resolved against (the file's own);
    # set by load_settings, never read from the file.
    base_dir: Path = Field(default=Path(), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _no_base_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and "base_dir" in data:
            raise ValueError("base_dir is not a config key")
        return data

    @model_validator(mode="after")
    def _unique_channels(self) -> Settings:
        seen: set[str] = set()
        for ch in self.channels:
            if ch.name in seen:
                raise ValueError(f"channel name {ch.name!r} is used twice")
            seen.add(ch.name)
        return self

    def resolve(self, path: Path | str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else self.base_dir / p


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    return DEFAULT_CONFIG_PATHS[-1]


def _env_value(raw: str) -> Any:
    """Env values are JSON when they parse as JSON (lists, numbers, booleans), else strings."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Merge `SENSORD_A__B__C=value` into data; list indexes are numbers (`CHANNELS__0__URL`).

    Returns the dotted key paths that were overridden (to name them in errors).
    """
    applied: list[str] = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(path):
            continue
        node: Any = data
        for i, key in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise ConfigError([Problem(f"${name}", None, f"no list item {key!r}")])
                if last:
                    node[int(key)] = _env_value(raw)
                else:
                    node = node[int(key)]
            elif isinstance(node, dict):
                if last:
                    node[key] = _env_value(raw)
                else:
                    node = node.setdefault(key, {})
            else:
                raise ConfigError([Problem(f"${name}", None, "does not name a table")])
        applied.append(".".join(path))
    return applied


_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")


def toml_key_line(text: str, path: tuple[str | int, ...]) -> int | None:
    """Best-effort line number of a key path in a TOML text (tomllib keeps no positions).

    Returns the key's own line, else the line of the deepest table header on its path.
    """
    table: tuple[str | int, ...] = ()
    array_counts: dict[str, int] = {}
    header_line: int | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER_RE.match(line):
            name = m.group(2).replace('"', "").replace("'", "")
            if m.group(1) == "[[":
                idx = array_counts.get(name, -1) + 1
                array_counts[name] = idx
                table = (*name.split("."), idx)
            else:
                first, *rest = name.split(".")
                head: tuple[str | int, ...] = (first,)
                if first in array_counts:  # [channels.retry] belongs to the last [[channels]]
                    head = (first, array_counts[first])
                table = (*head, *rest)
            if path[: len(table)] == table:
                header_line = lineno
            continue
        if (m := _KEY_RE.match(line)) is not None:
            key = tuple(m.group(1).replace('"', "").replace("'", "").split("."))
            full = (*table, *key)
            if path[: len(full)] == full:
                return lineno
    return header_line


def _loc_to_path(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the discriminator tag pydantic inserts after a channel index."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if i == 2 and loc[0] == "channels" and part in CHANNEL_TYPES:
            continue
        out.append(part)
    return tuple(out)


def _dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validation_problems(
    exc: ValidationError, file: str, text: str, env_keys: list[str] | None = None
) -> list[Problem]:
    problems = []
    for err in exc.errors():
        path = _loc_to_path(tuple(err["loc"]))
        dotted = _dotted(path)
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        lower = ".".join(str(p) for p in path)
        if env_keys and any(lower.startswith(k) for k in env_keys):
            where = f"{file} (environment override)"
            problems.append(Problem(where, None, f"{dotted}: {msg}"))
            continue
        text_msg = f"{dotted}: {msg}" if dotted else msg  # whole-file checks have no key
        problems.append(Problem(file, toml_key_line(text, path), text_msg))
    return problems


_CRED_RE = re.compile(r"\$\{CREDENTIALS_DIRECTORY\}|\$CREDENTIALS_DIRECTORY\b")


def expand_credentials(data: Any, environ: Mapping[str, str], file: str = "config") -> None:
    """In `*_file` values, replace `${CREDENTIALS_DIRECTORY}` with systemd's credentials dir.

    Under systemd `LoadCredential=` secrets land in $CREDENTIALS_DIRECTORY; this lets
    one config file name them without knowing the runtime path.
    """
    items: Any = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in list(items):
        if isinstance(value, dict | list):
            expand_credentials(value, environ, file)
        elif isinstance(value, str) and str(key).endswith("_file") and _CRED_RE.search(value):
            cred_dir = environ.get("CREDENTIALS_DIRECTORY")
            if cred_dir is None:
                raise ConfigError(
                    [
                        Problem(
                            file,
                            None,
                            f"{key} = {value!r} needs $CREDENTIALS_DIRECTORY "
                            "(systemd sets it for LoadCredential=)",
                        )
                    ]
                )
            data[key] = value.replace("${CREDENTIALS_DIRECTORY}", cred_dir).replace(
                "$CREDENTIALS_DIRECTORY", cred_dir
            )


def load_settings(  # noqa: PLR0915 - one pass over the file: parse, override, check, resolve
    path: Path, environ: Mapping[str, str] | None = None
) -> Settings:
    env = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(str(path), None, "config file not found")]) from None
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, f"cannot read: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))
        raise ConfigError([Problem(str(path), line, f"TOML syntax error: {msg}")]) from None
    env_keys = apply_env_overrides(data, env)
    expand_credentials(data, env, str(path))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, str(path), text, env_keys)) from None
    base_dir = path.resolve().parent
    mqtt = settings.mqtt
    updates: dict[str, Path] = {}
    for key in ("ca_file", "cert_file", "key_file"):
        tls_path: Path | None = getattr(mqtt, key)
        if tls_path is None:
            continue
        if not tls_path.is_absolute():
            tls_path = base_dir / tls_path
        if not tls_path.is_file():
            line = toml_key_line(text, ("mqtt", key))
            raise ConfigError([Problem(str(path), line, f"mqtt.{key}: cannot read {tls_path}")])
        updates[key] = tls_path
    if updates:
        mqtt = mqtt.model_copy(update=updates)
    if mqtt.password_file is not None:
        pw_path = mqtt.password_file
        if not pw_path.is_absolute():
            pw_path = base_dir / pw_path
        if not pw_path.is_file():
            line = toml_key_line(text, ("mqtt", "password_file"))
            raise ConfigError(
                [Problem(str(path), line, f"mqtt.password_file: cannot read {pw_path}")]
            )
        mqtt = mqtt.model_copy(update={"password_file": pw_path})
    problems = []
    for index, channel in enumerate(settings.channels):
        for key in CHANNEL_FILE_KEYS:
            value = getattr(channel, key, None)
            if value is None:
                continue
            file = value if value.is_absolute() else base_dir / value
            if not file.is_file():
                line = toml_key_line(text, ("channels", index, key))
                problems.append(
                    Problem(str(path), line, f"channels[{index}].{key}: cannot read {file}")
                )
    if problems:
        raise ConfigError(problems)
    http = settings.http
    if http.token_file is not None and not http.token_file.is_absolute():
        http = http.model_copy(update={"token_file": base_dir / http.token_file})
    return settings.model_copy(update={"base_dir": base_dir, "mqtt": mqtt, "http": http})
