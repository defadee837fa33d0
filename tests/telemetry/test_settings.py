"""`[telemetry]`: defaults, durations, bounds, and the stream's queue arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord.errors import ConfigError
from sensord.ops.config import load_settings
from sensord.telemetry.settings import TelemetrySettings
from sensord.telemetry.stream import stream_arguments


def test_defaults_are_off_with_the_documented_bounds() -> None:
    s = TelemetrySettings()
    assert (s.stream, s.prometheus) == (False, False)
    assert (s.stream_max_age, s.stream_max_bytes, s.batch, s.batch_max) == (604800, None, 0.1, 1000)
    assert (s.buffer, s.prometheus_max_series, s.prometheus_stale) == (100_000, 10_000, 900)
    assert stream_arguments(s) == {"x-queue-type": "stream", "x-max-age": "604800s"}


def test_the_config_file_section(tmp_path: Path) -> None:
    path = tmp_path / "sensord.toml"
    path.write_text(
        '[telemetry]\nstream = true\nstream_max_age = "2h"\nstream_max_bytes = 1000000\n'
        'batch = "250ms"\nprometheus = true\nprometheus_stale = "1m"\n'
    )
    s = load_settings(path, {}).telemetry
    assert (s.stream, s.prometheus, s.batch, s.prometheus_stale) == (True, True, 0.25, 60)
    assert stream_arguments(s) == {
        "x-queue-type": "stream",
        "x-max-age": "7200s",
        "x-max-length-bytes": 1_000_000,
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('batch = "0s"', "batch must be longer than 0s"),
        ("buffer = 0", "greater than or equal to 1"),
        ("streams = true", "unknown key"),
        ('stream_max_age = "soon"', "invalid duration"),
    ],
)
def test_bad_values_name_the_file_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "sensord.toml"
    path.write_text(f"[telemetry]\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    (problem,) = info.value.problems
    assert str(problem).startswith(f"{path}:")
    assert message in str(problem)
