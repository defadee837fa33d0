"""Topic + payload -> Readings, or PayloadError with a reason code: the bridge's parser.

`PayloadParser` builds one registered format (`sensord.ingest.formats`; "sensord" unless
told otherwise) and hands the bridge that format's own `parse`, so the per-message call
goes straight into it. The reason codes, topic templates and timestamp parsing that other
stages use are re-exported here from where they live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sensord.ingest import formats
from sensord.ingest.formats import FormatOptions, Parse, PayloadFormat
from sensord.ingest.formats._fields import parse_ts
from sensord.ingest.formats.senml import senml_device_kind
from sensord.ingest.reasons import (
    CLOCK_SKEW,
    NON_FINITE,
    NOT_JSON,
    REASONS,
    SCHEMA,
    TOO_LARGE,
    TOPIC,
    UNIT,
)
from sensord.ingest.topics import TopicTemplate, TopicTemplates

__all__ = [
    "CLOCK_SKEW",
    "NON_FINITE",
    "NOT_JSON",
    "REASONS",
    "SCHEMA",
    "TOO_LARGE",
    "TOPIC",
    "UNIT",
    "PayloadParser",
    "TopicTemplate",
    "TopicTemplates",
    "parse_ts",
    "senml_device_kind",
]


class PayloadParser:
    """Topic + payload -> Readings (one, or one per SenML record).

    `units` maps a kind to the unit its readings are converted to; `max_clock_skew`
    refuses timestamps more than that many seconds ahead of the receive time;
    `payload_format` names a registered format (an unknown one raises UnknownFormatError).
    """

    parse: Parse

    def __init__(
        self,
        template: str | Sequence[str],
        max_payload: int,
        *,
        units: Mapping[str, str] | None = None,
        max_clock_skew: float = 300.0,
        payload_format: str = "sensord",
    ) -> None:
        options = FormatOptions(template, max_payload, units or {}, max_clock_skew)
        self.format: PayloadFormat = formats.create(payload_format, options)
        # the format's bound method itself: no call layer of ours on the per-message path
        self.parse = self.format.parse
