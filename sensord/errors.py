"""One exception root; errors carry data and name the file, line or key at fault."""

from __future__ import annotations

from dataclasses import dataclass


class SensordError(Exception):
    """Root of every error sensord raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One user-facing problem in a config or rule file."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class ConfigError(SensordError):
    """A config or rule file is invalid; holds every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PayloadError(SensordError):
    """An MQTT message was refused; `reason` is the stable code counted in metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class NotifyError(SensordError):
    """A notification could not be delivered."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)


class StateFileError(SensordError):
    """The SQLite state file cannot be used (e.g. written by a newer sensord)."""
