"""Topic -> labels: `sensors/{site}/{device}/{kind}` templates, cached per topic.

A payload format that names its sensors by topic (the "sensord" and "senml" formats) takes
site, device, kind and any extra `{label}` from here, once per distinct topic.
"""

from __future__ import annotations

from collections.abc import Sequence

from sensord.errors import PayloadError
from sensord.ingest.reasons import TOPIC

_TOPIC_CACHE_MAX = 100_000

Labels = tuple[str, str, str, dict[str, str]]  # site, device, kind, extra labels


class TopicTemplate:
    """`sensors/{site}/{device}/{kind}` -> labels; literal segments must match exactly."""

    def __init__(self, template: str) -> None:
        self.template = template
        self._parts: list[tuple[bool, str]] = []
        for seg in template.split("/"):
            if seg.startswith("{") and seg.endswith("}"):
                self._parts.append((True, seg[1:-1]))
            else:
                self._parts.append((False, seg))

    def match(self, topic: str, segs: list[str]) -> Labels | str:
        """Labels, or why the topic does not match."""
        if len(segs) != len(self._parts):
            return f"topic {topic!r} does not match {self.template!r}"
        found: dict[str, str] = {}
        for (named, name), seg in zip(self._parts, segs, strict=True):
            if named:
                if not seg:
                    return f"topic {topic!r}: empty {{{name}}} segment"
                found[name] = seg
            elif seg != name:
                return f"topic {topic!r} does not match {self.template!r}"
        site, device, kind = found.pop("site"), found.pop("device"), found.pop("kind")
        return (site, device, kind, found)


class TopicTemplates:
    """One or more templates, tried in order: the first that matches names the labels."""

    def __init__(self, templates: str | Sequence[str]) -> None:
        names = [templates] if isinstance(templates, str) else list(templates)
        self.templates = [TopicTemplate(t) for t in names]
        self._cache: dict[str, Labels] = {}

    def labels(self, topic: str) -> Labels:
        cached = self._cache.get(topic)
        if cached is not None:
            return cached
        segs = topic.split("/")
        why = ""
        for template in self.templates:
            result = template.match(topic, segs)
            if isinstance(result, str):
                why = why or result
                continue
            if len(self._cache) >= _TOPIC_CACHE_MAX:
                self._cache.clear()  # bounded: a flood of random topics cannot grow memory
            self._cache[topic] = result
            return result
        if len(self.templates) > 1:
            why = f"topic {topic!r} matches none of the {len(self.templates)} topic templates"
        raise PayloadError(TOPIC, why)
