"""The built-in channel types: importing a channel module registers its type.

One name per type below. The config loader imports this module, so that `[[channels]]` entries
are validated against every built-in type (sensord.notify.registry).
"""

from sensord.notify import alertmanager, console, email, file, mqtt, webhook  # webhook: + slack

__all__ = ["alertmanager", "console", "email", "file", "mqtt", "webhook"]
