"""The command line: `sensord run|check|rules|status|sources|alerts|silences|dlq` (main.py)."""

from sensord.cli.main import main

__all__ = ["main"]
