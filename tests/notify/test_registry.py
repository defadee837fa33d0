"""Channel types by name: a new type is one module that registers itself, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from sensord.errors import ConfigError, NotifyError
from sensord.events import AlertEvent
from sensord.notify import registry
from sensord.notify.channels import make_channel
from sensord.notify.console import ConsoleChannel, ConsoleChannelSettings
from sensord.notify.registry import ChannelContext, register
from sensord.notify.settings import ChannelSettingsBase
from sensord.ops.config import load_settings


class PagerChannelSettings(ChannelSettingsBase):
    FILE_KEYS = ("key_file",)

    type: Literal["pager"]
    number: str
    key_file: Path | None = None


class PagerChannel:
    def __init__(self, settings: PagerChannelSettings, key_file: Path | None) -> None:
        self.name = settings.name
        self.number = settings.number
        self.key_file = key_file

    async def start(self) -> None:
        return None

    async def send(self, event: AlertEvent) -> None:
        raise NotifyError("no pager network in tests", retryable=False)

    async def close(self) -> None:
        return None


def _pager(settings: PagerChannelSettings, context: ChannelContext) -> PagerChannel:
    return PagerChannel(settings, context.resolve_optional(settings.key_file))


@pytest.fixture
def with_pager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register `pager` for one test; the built-in types are left as they were."""
    monkeypatch.setattr(registry, "_TYPES", dict(registry._TYPES))
    register("pager", PagerChannelSettings, _pager)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sensord.toml"
    path.write_text(text)
    return path


PAGER = '[[channels]]\nname = "oncall"\ntype = "pager"\nnumber = "555"\nkey_file = "pager.key"\n'


@pytest.mark.usefixtures("with_pager")
def test_a_registered_type_is_validated_and_built_through_the_registry(tmp_path: Path) -> None:
    (tmp_path / "pager.key").write_text("k")
    settings = load_settings(write(tmp_path, PAGER), {})
    [channel_settings] = settings.channels
    assert isinstance(channel_settings, PagerChannelSettings)
    assert channel_settings.number == "555"
    channel = make_channel(channel_settings, settings, "http://sensord")
    assert isinstance(channel, PagerChannel)
    assert channel.key_file == tmp_path.resolve() / "pager.key"  # against the config's dir
    # dumped with its own keys, not only the common ones
    assert settings.model_dump()["channels"][0]["number"] == "555"


@pytest.mark.usefixtures("with_pager")
def test_a_registered_type_gets_file_line_errors_and_its_file_keys_checked(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, PAGER + "numbr = 1\n"), {})
    [problem] = exc.value.problems
    assert (problem.line, problem.message) == (6, "channels[0].numbr: unknown key")
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, PAGER), {})  # pager.key does not exist
    [problem] = exc.value.problems
    assert problem.line == 5
    assert problem.message.startswith("channels[0].key_file: cannot read ")


def test_an_unknown_type_lists_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, PAGER), {})  # pager is not registered here
    [problem] = exc.value.problems
    assert problem.line == 1
    assert problem.message == (
        "channels[0]: unknown channel type 'pager'; known types: "
        "alertmanager, console, email, file, mqtt, slack, webhook"
    )


def test_a_missing_type_lists_the_registered_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, '\n[[channels]]\nname = "x"\n'), {})
    [problem] = exc.value.problems
    assert problem.line == 2
    assert problem.message.startswith("channels[0]: a channel needs a type, one of: alertmanager")


class OtherConsoleSettings(ConsoleChannelSettings):
    pass


def _other_console(settings: OtherConsoleSettings, context: ChannelContext) -> ConsoleChannel:
    return ConsoleChannel(settings)


def test_register_checks_the_type_literal_and_refuses_a_second_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_TYPES", dict(registry._TYPES))
    with pytest.raises(TypeError, match=r"PagerChannelSettings.type must be Literal\['beeper'\]"):
        register("beeper", PagerChannelSettings, _pager)
    with pytest.raises(ValueError, match="'console' is registered twice"):
        register("console", OtherConsoleSettings, _other_console)
    assert "beeper" not in registry.known_types()
