"""The config loader: TOML file + `SENSORD_SECTION__KEY` environment overrides -> Settings.

Each stage's settings live next to the stage (`sensord/<stage>/settings.py`, a channel
type's in its module); this module composes them. Keys are a contract (ARCHITECTURE.md).
Unknown keys are errors naming the file, line and key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

import sensord.notify.builtin  # noqa: F401 - registers the built-in channel types
from sensord.alerts.settings import AlertsSettings
from sensord.amqp.settings import AmqpSettings
from sensord.central.settings import CentralSettings
from sensord.errors import ConfigError, Problem
from sensord.http.settings import HttpSettings
from sensord.ingest.settings import IngestSettings, MqttSettings
from sensord.notify.registry import ChannelSettings
from sensord.ops.settings import Section
from sensord.rules.settings import RulesSettings
from sensord.state.settings import StateSettings
from sensord.telemetry.settings import TelemetrySettings

ENV_PREFIX = "SENSORD_"
CONFIG_ENV = "SENSORD_CONFIG"
DEFAULT_CONFIG_PATHS = (Path("/etc/sensord/sensord.toml"), Path("sensord.toml"))


class Settings(Section):
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    central: CentralSettings = Field(default_factory=CentralSettings)
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
        path = tuple(err["loc"])
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
    amqp = settings.amqp
    amqp_files: dict[str, Path] = {}
    for key in ("ca_file", "cert_file", "key_file", "password_file"):
        amqp_path: Path | None = getattr(amqp, key)
        if amqp_path is None:
            continue
        if not amqp_path.is_absolute():
            amqp_path = base_dir / amqp_path
        if not amqp_path.is_file():
            line = toml_key_line(text, ("amqp", key))
            raise ConfigError([Problem(str(path), line, f"amqp.{key}: cannot read {amqp_path}")])
        amqp_files[key] = amqp_path
    if amqp_files:
        amqp = amqp.model_copy(update=amqp_files)
    problems = []
    for index, channel in enumerate(settings.channels):
        for key in channel.FILE_KEYS:
            value = getattr(channel, key)
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
    return settings.model_copy(
        update={"base_dir": base_dir, "mqtt": mqtt, "http": http, "amqp": amqp}
    )
