"""Generated docs stay in step with the code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_committed_asyncapi_document_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sensord", "docs", "asyncapi", "-c", str(ROOT / "sensord.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    committed = (ROOT / "docs" / "asyncapi.json").read_text()
    assert result.stdout == committed, (
        "docs/asyncapi.json is stale: run `sensord docs asyncapi -c sensord.toml "
        "-o docs/asyncapi.json`"
    )
    doc = json.loads(committed)
    assert doc["asyncapi"] == "3.0.0"
    assert "sensord.alerts:publish" in doc["channels"]
    schema = doc["components"]["schemas"]["AlertEvent"]
    assert set(schema["required"]) >= {"event_id", "fingerprint", "status", "rule", "labels"}
    assert "guest" not in committed  # no credentials from the AMQP URL


def _sensord_metric_names() -> set[str]:
    from sensord.ops.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def _referenced(text: str) -> set[str]:
    import re

    return set(re.findall(r"\bsensord_[a-z_]+", text))


def test_grafana_dashboard_uses_only_existing_metrics() -> None:
    dash = json.loads((ROOT / "docs" / "grafana" / "sensord.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    missing = set().union(*map(_referenced, exprs)) - _sensord_metric_names()
    assert missing == set()


def test_prometheus_rules_use_only_existing_metrics() -> None:
    text = (ROOT / "docs" / "prometheus" / "sensord-rules.yaml").read_text()
    referenced = _referenced(text)
    assert "sensord_outbox_pending" in referenced
    assert referenced - _sensord_metric_names() == set()


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is missing")
def test_prometheus_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ROOT / "docs" / "prometheus" / "sensord-rules.yaml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _doc_sections(text: str) -> dict[str, str]:
    import re

    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    return {p.split("\n", 1)[0].strip(): p for p in parts[1:]}


def test_configuration_reference_names_every_key() -> None:
    """docs/configuration.md cannot drift from the config model: every key is documented."""
    import re

    from pydantic import BaseModel

    from sensord.notify.registry import channel_types
    from sensord.ops.config import Settings

    sections = _doc_sections((ROOT / "docs" / "configuration.md").read_text())
    missing: list[str] = []
    for name, field in Settings.model_fields.items():
        if name in ("channels", "base_dir"):
            continue
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        doc = sections.get(f"`[{name}]`", "")
        missing += [f"{name}.{key}" for key in model.model_fields if f"`{key}`" not in doc]
    # common channel keys in configuration.md, each type's own in channels.md
    channel_doc = sections.get("`[[channels]]`", "") + (ROOT / "docs" / "channels.md").read_text()
    for channel_type in channel_types():
        for key, field in channel_type.settings.model_fields.items():
            shown = field.alias or key
            if not re.search(rf"`{re.escape(shown)}( = [^`]*)?`", channel_doc):
                missing.append(f"channels.{shown}")
    assert missing == [], f"document these keys in docs/configuration.md: {missing}"


def test_every_channel_type_has_its_section_in_channels_md() -> None:
    """Adding a channel type includes its docs: a `## <type>` section in docs/channels.md."""
    from sensord.notify.registry import known_types

    sections = _doc_sections((ROOT / "docs" / "channels.md").read_text())
    assert known_types() == ["alertmanager", "console", "email", "file", "mqtt", "slack", "webhook"]
    assert [t for t in known_types() if t not in sections] == []
