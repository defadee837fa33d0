"""Channel types by name: each channel module registers its settings class and its factory.

`[[channels]] type = "..."` is looked up here when the config is validated, and again
when the channel is built; nothing else lists the types (Telegraf's outputs registry is
the model). `sensord.notify.channels` imports the built-in modules, which registers them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TextIO, TypeVar, get_args

from pydantic import SerializeAsAny, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

from sensord.notify.base import NotificationChannel
from sensord.notify.settings import ChannelSettingsBase

S = TypeVar("S", bound=ChannelSettingsBase)


@dataclass(frozen=True)
class ChannelContext:
    """What a factory may need besides the channel's own settings."""

    resolve: Callable[[Path], Path]  # a path from the config, against the config's directory
    external_url: str  # sensord's own URL, for links back from a notification
    console: TextIO | None = None  # where `console` channels write (None: standard output)

    def resolve_optional(self, path: Path | None) -> Path | None:
        return None if path is None else self.resolve(path)


@dataclass(frozen=True)
class ChannelType(Generic[S]):
    name: str
    settings: type[S]
    factory: Callable[[S, ChannelContext], NotificationChannel]


_TYPES: dict[str, ChannelType[Any]] = {}


def register(
    name: str, settings: type[S], factory: Callable[[S, ChannelContext], NotificationChannel]
) -> None:
    """Make `type = "<name>"` valid in `[[channels]]`, validated by `settings`."""
    field = settings.model_fields.get("type")
    if field is None or get_args(field.annotation) != (name,):
        raise TypeError(f"{settings.__name__}.type must be Literal[{name!r}]")
    known = _TYPES.get(name)
    if known is not None and known.settings is not settings:
        raise ValueError(f"channel type {name!r} is registered twice")
    _TYPES[name] = ChannelType(name, settings, factory)


def known_types() -> list[str]:
    return sorted(_TYPES)


def channel_types() -> list[ChannelType[Any]]:
    return [_TYPES[name] for name in known_types()]


def build_channel(settings: ChannelSettingsBase, context: ChannelContext) -> NotificationChannel:
    """The channel for one validated `[[channels]]` entry."""
    return _TYPES[settings.type].factory(settings, context)


def _one_error(message: str, data: object) -> ValidationError:
    # raised inside a validator, a ValidationError keeps its location (under channels[i])
    detail: InitErrorDetails = {
        "type": PydanticCustomError("channel_type", message),
        "loc": (),
        "input": data,
    }
    return ValidationError.from_exception_data("ChannelSettings", [detail])


def _validate(data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Validate a `[[channels]]` table with the settings class its `type` names."""
    if isinstance(data, ChannelSettingsBase) or not isinstance(data, dict):
        return handler(data)  # an instance passes; anything else gets pydantic's own error
    known = ", ".join(known_types())
    if "type" not in data:
        raise _one_error(f"a channel needs a type, one of: {known}", data)
    channel_type = _TYPES.get(data["type"]) if isinstance(data["type"], str) else None
    if channel_type is None:
        raise _one_error(f"unknown channel type {data['type']!r}; known types: {known}", data)
    return channel_type.settings.model_validate(data)


# A `[[channels]]` entry: validated by its registered type, dumped with all its keys.
ChannelSettings = Annotated[SerializeAsAny[ChannelSettingsBase], WrapValidator(_validate)]
