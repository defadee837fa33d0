"""The `topic_prefix` option of the formats whose firmware publishes under a prefix of the
user's choosing (Shelly's `mqtt.topic_prefix`, ESPHome's `mqtt: topic_prefix:`)."""

from __future__ import annotations


def topic_prefixes(raw: object) -> tuple[str, ...]:
    """One prefix or a list of them, as set on the devices; () when the option is absent.

    A prefix may hold `/` and `+` (a filter level), not `#`, and may not start with `$`.
    """
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list | tuple) or not items:
        raise ValueError("topic_prefix: must be a string or a non-empty list of strings")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip("/"):
            raise ValueError("topic_prefix: must be a string or a non-empty list of strings")
        if "#" in item or item.startswith("$"):
            raise ValueError(f"topic_prefix: {item!r} may not hold '#' nor start with '$'")
        out.append(item.strip("/"))
    return tuple(out)
