"""Settings: the contract file loads, env overrides apply, every error names file, line and key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sensord.amqp.settings import AmqpSettings
from sensord.errors import ConfigError, Problem
from sensord.notify.console import ConsoleChannelSettings
from sensord.notify.webhook import WebhookChannelSettings
from sensord.ops.config import Settings, load_settings
from sensord.ops.settings import parse_duration

# The example from ARCHITECTURE.md, "Configuration file, TOML (contract)", verbatim.
CONTRACT_EXAMPLE = """\
[mqtt]
url = "mqtt://127.0.0.1:1883"          # mqtts:// for TLS; credentials via *_file keys
client_id = "sensord-edge-1"           # stable id → persistent session
topics = ["sensors/#"]
topic_template = "sensors/{site}/{device}/{kind}"
qos = 1

[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/"
prefix = "sensord"                     # every exchange and queue name starts with it

[rules]
paths = ["rules/*.yaml"]

[state]
path = "var/sensord.db"                # SQLite; systemd sets it under StateDirectory

[http]
listen = "127.0.0.1:9300"

[[channels]]
name = "ops"
type = "webhook"
url = "http://127.0.0.1:9000/alerts"
severities = ["critical", "warning"]   # which alerts this channel receives
send_resolved = true
[channels.retry]
max_attempts = 3
delay = "5s"                           # first retry delay; doubles, capped
"""

TWO_CHANNELS = """\
[mqtt]
url = "mqtt://127.0.0.1:1883"

[[channels]]
name = "console"
type = "console"

[[channels]]
name = "ops"
type = "webhook"
url = "http://127.0.0.1:9000/alerts"
"""


def write(tmp_path: Path, text: str, name: str = "sensord.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, {} if environ is None else environ)
    assert info.value.problems, "a ConfigError must carry at least one problem"
    return info.value.problems


def only_problem(path: Path, environ: dict[str, str] | None = None) -> Problem:
    problems = problems_of(path, environ)
    assert len(problems) == 1, problems
    return problems[0]


# ---------------------------------------------------------------- loading


def test_contract_example_loads(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONTRACT_EXAMPLE), {})
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"
    assert settings.mqtt.host == "127.0.0.1"
    assert settings.mqtt.port == 1883
    assert settings.mqtt.client_id == "sensord-edge-1"
    assert settings.mqtt.topics == ["sensors/#"]
    assert settings.mqtt.topic_template == "sensors/{site}/{device}/{kind}"
    assert settings.mqtt.qos == 1
    assert settings.amqp.urls == ["amqp://guest:guest@127.0.0.1:5672/"]  # one URL, as before
    assert settings.amqp.prefix == "sensord"
    assert settings.rules.paths == ["rules/*.yaml"]
    assert settings.state.path == Path("var/sensord.db")
    assert (settings.http.host, settings.http.port) == ("127.0.0.1", 9300)
    assert len(settings.channels) == 1
    channel = settings.channels[0]
    assert isinstance(channel, WebhookChannelSettings)
    assert channel.name == "ops"
    assert channel.url == "http://127.0.0.1:9000/alerts"
    assert channel.severities == ["critical", "warning"]
    assert channel.send_resolved is True
    assert channel.retry.max_attempts == 3
    assert channel.retry.delay == 5.0


def test_secret_url_is_not_printed(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CONTRACT_EXAMPLE), {})
    assert "guest:guest" not in repr(settings.amqp)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), {})
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"
    assert settings.mqtt.qos == 1
    assert settings.mqtt.topics == ["sensors/#"]
    assert settings.mqtt.topic_template == "sensors/{site}/{device}/{kind}"
    assert settings.mqtt.max_payload == 65536
    assert settings.amqp.prefix == "sensord"
    assert settings.rules.paths == ["rules/*.yaml"]
    assert settings.http.listen == "127.0.0.1:9300"
    assert settings.channels == []


def test_channel_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[[channels]]\nname = "c"\ntype = "console"\n')
    channel = load_settings(path, {}).channels[0]
    assert isinstance(channel, ConsoleChannelSettings)
    assert channel.severities == ["critical", "warning", "info"]
    assert channel.send_resolved is True
    assert channel.retry.max_attempts == 3
    assert channel.retry.delay == 5.0


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    problem = only_problem(tmp_path / "nope.toml")
    assert problem.file == str(tmp_path / "nope.toml")
    assert "not found" in problem.message


# ---------------------------------------------------------------- environment overrides


def test_env_overrides_url_qos_topics(tmp_path: Path) -> None:
    env = {
        "SENSORD_MQTT__URL": "mqtt://broker.example:1884",
        "SENSORD_MQTT__QOS": "0",
        "SENSORD_MQTT__TOPICS": '["a/#","b/#"]',
    }
    settings = load_settings(write(tmp_path, CONTRACT_EXAMPLE), env)
    assert settings.mqtt.url == "mqtt://broker.example:1884"
    assert settings.mqtt.host == "broker.example"
    assert settings.mqtt.port == 1884
    assert settings.mqtt.qos == 0
    assert isinstance(settings.mqtt.qos, int)
    assert settings.mqtt.topics == ["a/#", "b/#"]
    # keys not overridden keep the file's values
    assert settings.mqtt.client_id == "sensord-edge-1"


def test_env_override_of_a_list_item(tmp_path: Path) -> None:
    env = {"SENSORD_CHANNELS__1__URL": "https://hooks.example/x"}
    settings = load_settings(write(tmp_path, TWO_CHANNELS), env)
    channel = settings.channels[1]
    assert isinstance(channel, WebhookChannelSettings)
    assert channel.url == "https://hooks.example/x"
    assert settings.channels[0].name == "console"


def test_env_override_of_a_missing_section(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, ""), {"SENSORD_AMQP__PREFIX": "site7"})
    assert settings.amqp.prefix == "site7"
    assert settings.amqp.exchange == "site7.alerts"


def test_env_numeric_text_for_a_string_key(tmp_path: Path) -> None:
    """Env values parse as JSON; a numeric client id must still reach a str key."""
    settings = load_settings(write(tmp_path, ""), {"SENSORD_MQTT__CLIENT_ID": "123"})
    assert settings.mqtt.client_id == "123"


def test_sensord_config_is_not_an_override(tmp_path: Path) -> None:
    path = write(tmp_path, CONTRACT_EXAMPLE)
    env = {"SENSORD_CONFIG": str(path), "OTHER": "x", "PATH": "/bin"}
    settings = load_settings(path, env)
    assert settings.mqtt.client_id == "sensord-edge-1"


def test_env_override_with_bad_value_names_the_override(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ""), {"SENSORD_MQTT__QOS": "7"})
    assert "environment" in problem.file
    assert problem.line is None
    assert "mqtt.qos" in problem.message


def test_env_override_of_an_unknown_key(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, ""), {"SENSORD_MQTT__URLL": "mqtt://x:1"})
    assert "environment" in problem.file
    assert "mqtt.urll" in problem.message
    assert "unknown key" in problem.message


def test_env_override_of_a_missing_list_item(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, TWO_CHANNELS), {"SENSORD_CHANNELS__5__URL": "x"})
    assert "SENSORD_CHANNELS__5__URL" in problem.file
    assert "5" in problem.message


# ---------------------------------------------------------------- errors: file, line, key


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    text = '# sensord\n\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\nurll = "mqtt://x:1"\nqos = 1\n'
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.file == str(path)
    assert problem.line == 5
    assert "mqtt.urll" in problem.message
    assert "unknown key" in problem.message
    assert str(problem).startswith(f"{path}:5: ")


def test_unknown_key_in_second_channel_table(tmp_path: Path) -> None:
    path = write(tmp_path, TWO_CHANNELS + 'urll = "x"\n')
    assert TWO_CHANNELS.count("\n") == 11  # so the stray key is line 12
    problem = only_problem(path)
    assert problem.line == 12
    assert "channels[1].urll" in problem.message
    assert "unknown key" in problem.message


def test_unknown_key_in_channel_retry_table(tmp_path: Path) -> None:
    text = (
        "[[channels]]\n"  # 1
        'name = "a"\n'  # 2
        'type = "console"\n'  # 3
        "[channels.retry]\n"  # 4
        "max_attempts = 3\n"  # 5
        "[[channels]]\n"  # 6
        'name = "b"\n'  # 7
        'type = "console"\n'  # 8
        "[channels.retry]\n"  # 9
        "max_attempts = 3\n"  # 10
        'delayy = "5s"\n'  # 11
    )
    problem = only_problem(write(tmp_path, text))
    assert problem.line == 11
    assert "channels[1].retry.delayy" in problem.message


def test_unknown_section_points_to_its_header(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, '[mqtt]\nqos = 1\n\n[mqqt]\nurl = "x"\n'))
    assert problem.line == 4
    assert "mqqt" in problem.message


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = '[mqtt]\nurll = "x"\nqos = 9\n[http]\nlisten = "nope"\n'
    problems = problems_of(write(tmp_path, text))
    assert sorted(p.line for p in problems if p.line is not None) == [2, 3, 5]


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nurl = "mqtt://x:1"\n\n[amqp\nprefix = "y"\n')
    problem = only_problem(path)
    assert problem.file == str(path)
    assert problem.line == 4
    assert "TOML" in problem.message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param(
            '[mqtt]\nurl = "http://127.0.0.1:1883"\n', 2, ["mqtt.url", "mqtt://"], id="scheme"
        ),
        pytest.param('[mqtt]\nurl = "mqtt://"\n', 2, ["mqtt.url", "host"], id="no-host"),
        pytest.param(
            '[mqtt]\ntopic_template = "sensors/{site}/{device}/temp"\n',
            2,
            ["mqtt.topic_template", "kind"],
            id="template-without-kind",
        ),
        pytest.param(
            '[mqtt]\ntopic_template = "s/{site}/{device}-x/{kind}"\n',
            2,
            ["mqtt.topic_template", "whole level"],
            id="template-partial-segment",
        ),
        pytest.param("[mqtt]\n\nqos = 3\n", 3, ["mqtt.qos"], id="qos"),
        pytest.param(
            '[[channels]]\nname = "a"\ntype = "console"\n[channels.retry]\ndelay = "5 parsecs"\n',
            5,
            ["channels[0].retry.delay", "5 parsecs"],
            id="bad-duration",
        ),
        pytest.param(
            '[[channels]]\nname = "a"\ntype = "webhook"\n',
            1,
            ["channels[0].url", "required"],
            id="webhook-without-url",
        ),
        pytest.param(
            '[[channels]]\nname = "a"\ntype = "webhook"\nurl = "ftp://x/"\n',
            4,
            ["channels[0].url", "http"],
            id="webhook-bad-url",
        ),
        pytest.param(
            '[[channels]]\nname = "a"\ntype = "pager"\n',
            1,
            ["channels[0]", "pager", "webhook"],
            id="unknown-channel-type",
        ),
        pytest.param(
            '[[channels]]\nname = "a b"\ntype = "console"\n',
            2,
            ["channels[0].name"],
            id="bad-channel-name",
        ),
        pytest.param('[http]\nlisten = "9300"\n', 2, ["http.listen", "host:port"], id="listen"),
        pytest.param('[amqp]\nprefix = "a b"\n', 2, ["amqp.prefix"], id="prefix"),
    ],
)
def test_invalid_values(tmp_path: Path, text: str, line: int, words: list[str]) -> None:
    path = write(tmp_path, text)
    problem = only_problem(path)
    assert problem.file == str(path)
    assert problem.line == line
    for word in words:
        assert word in problem.message


def test_duplicate_channel_names(tmp_path: Path) -> None:
    text = TWO_CHANNELS.replace('name = "ops"', 'name = "console"')
    problem = only_problem(write(tmp_path, text))
    assert "console" in problem.message
    assert "twice" in problem.message
    assert not problem.message.startswith(":"), "no empty key path in front of the message"


def test_base_dir_is_refused(tmp_path: Path) -> None:
    problem = only_problem(write(tmp_path, 'base_dir = "/etc"\n'))
    assert "base_dir" in problem.message
    assert "not a config key" in problem.message


def test_nan_duration_is_refused(tmp_path: Path) -> None:
    text = '[[channels]]\nname = "a"\ntype = "console"\n[channels.retry]\ndelay = nan\n'
    problem = only_problem(write(tmp_path, text))
    assert problem.line == 5
    assert "finite" in problem.message


# ---------------------------------------------------------------- paths and names


def test_relative_paths_resolve_against_the_config_dir(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    settings = load_settings(write(tmp_path / "etc", CONTRACT_EXAMPLE), {})
    base = (tmp_path / "etc").resolve()
    assert settings.base_dir == base
    assert settings.resolve(settings.state.path) == base / "var" / "sensord.db"
    assert settings.resolve("rules/x.yaml") == base / "rules" / "x.yaml"
    assert settings.resolve("/var/lib/sensord/db") == Path("/var/lib/sensord/db")


def test_base_dir_is_not_serialised() -> None:
    assert "base_dir" not in Settings().model_dump()


def test_amqp_names_derive_from_prefix() -> None:
    amqp = AmqpSettings(prefix="plant7")
    assert amqp.exchange == "plant7.alerts"
    assert amqp.notify_queue("ops") == "plant7.notify.ops"
    assert amqp.dead_queue("ops") == "plant7.notify.ops.dead"
    default = AmqpSettings()
    assert default.exchange == "sensord.alerts"
    assert default.notify_queue("console") == "sensord.notify.console"
    assert default.dead_queue("console") == "sensord.notify.console.dead"


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        (" 10 s ", 10.0),
        ("7", 7.0),
        (3, 3.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "5 parsecs",
        "",
        "-5s",
        -1,
        -0.5,
        True,
        False,
        None,
        [5],
        math.nan,
        math.inf,
        "9" * 400 + "s",
    ],
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)
