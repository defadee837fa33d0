"""Pure parts of the notify side: topology names and bindings, tiers, token bucket, rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord.amqp.settings import AmqpSettings
from sensord.amqp.topology import (
    binding_keys,
    channel_queues,
    format_delay,
    matches,
    retry_delay,
    retry_delays,
    tier_at_least,
)
from sensord.errors import ConfigError
from sensord.events import AlertEvent
from sensord.notify.email import EmailChannelSettings, build_message
from sensord.notify.registry import ChannelSettings
from sensord.notify.render import render
from sensord.notify.settings import RateLimitSettings
from sensord.notify.throttle import TokenBucket
from sensord.notify.webhook import signature
from sensord.ops.config import Settings, load_settings
from tests.support import make_event


def channel(**extra: object) -> ChannelSettings:
    settings = Settings.model_validate({"channels": [{"name": "c", "type": "console", **extra}]})
    return settings.channels[0]


@pytest.mark.parametrize(
    ("match", "keys"),
    [
        (None, ["critical.*.*", "warning.*.*"]),
        ({"site": "plant-1"}, ["critical.plant-1.*", "warning.plant-1.*"]),
        (
            {"site": "plant-*", "kind": "temperature"},
            ["critical.*.temperature", "warning.*.temperature"],
        ),
        ({"site": "a.b", "kind": "t?"}, ["critical.*.*", "warning.*.*"]),
        ({"site": "x#"}, ["critical.*.*", "warning.*.*"]),
    ],
)
def test_binding_keys_use_literal_words_and_star_for_globs(
    match: dict[str, str] | None, keys: list[str]
) -> None:
    extra: dict[str, object] = {"severities": ["critical", "warning"]}
    if match is not None:
        extra["match"] = match
    assert binding_keys(channel(**extra)) == keys


def test_match_filters_the_rest_with_globs() -> None:
    ch = channel(match={"site": "plant-?", "kind": "temp*"})
    assert matches(ch, {"site": "plant-1", "kind": "temperature"})
    assert not matches(ch, {"site": "plant-12", "kind": "temperature"})
    assert not matches(ch, {"site": "plant-1", "kind": "humidity"})
    assert matches(channel(), {})


@pytest.mark.parametrize(
    ("retry", "rate_limit", "tiers"),
    [
        ({"max_attempts": 3, "delay": "5s"}, None, [5.0, 10.0]),
        ({"max_attempts": 6, "delay": "200ms", "max_delay": "1s"}, None, [0.2, 0.4, 0.8, 1.0]),
        ({"max_attempts": 1, "delay": "5s"}, None, []),
        ({"max_attempts": 1, "delay": "5s"}, {"rate": 1}, [5.0]),
    ],
)
def test_retry_tiers_double_up_to_max_delay(
    retry: dict[str, object], rate_limit: dict[str, object] | None, tiers: list[float]
) -> None:
    extra: dict[str, object] = {"retry": retry}
    if rate_limit:
        extra["rate_limit"] = rate_limit
    assert retry_delays(channel(**extra)) == tiers


def test_retry_delay_and_tier_choice() -> None:
    ch = channel(retry={"max_attempts": 5, "delay": "1s", "max_delay": "3s"})
    assert [retry_delay(ch, n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 3.0, 3.0]
    assert tier_at_least([1.0, 2.0, 3.0], 1.5) == 2.0
    assert tier_at_least([1.0, 2.0, 3.0], 60) == 3.0
    assert format_delay(0.2) == "200ms"
    assert format_delay(5) == "5s"


def test_channel_queues_keep_the_first_release_arguments_tiers_are_quorum_now() -> None:
    ch = channel(retry={"max_attempts": 3, "delay": "200ms"})
    specs = {s.name: s for s in channel_queues(AmqpSettings(prefix="p"), ch)}
    assert specs["p.notify.c"].arguments == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "p.notify.c.dead",
    }
    assert specs["p.notify.c.dead"].arguments == {"x-queue-type": "quorum"}
    tier = specs["p.notify.c.retry.400ms"]
    assert tier.arguments == {
        "x-queue-type": "quorum",
        "x-message-ttl": 400,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "p.notify.c",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    # the classic tier of 0.x, migrated when found empty (tests/amqp/test_quorum_queues.py)
    assert tier.legacy == {
        "x-message-ttl": 400,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "p.notify.c",
    }
    assert specs["p.notify.c"].legacy is None  # quorum since 0.1
    assert set(specs) == {
        "p.notify.c",
        "p.notify.c.dead",
        "p.notify.c.retry.200ms",
        "p.notify.c.retry.400ms",
    }


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(RateLimitSettings(rate=10, burst=2), now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.1) == 0.0
    assert bucket.take(10.0) == 0.0  # refilled, but never beyond the burst
    assert bucket.take(10.0) == 0.0
    assert bucket.take(10.0) > 0


def test_templates_render_numbers_and_missing_values() -> None:
    event = AlertEvent.model_validate({**make_event(site="s", device="d"), "value": None})
    assert render("{STATUS} {site}/{device} {value} {threshold:.1f}", event, "c") == (
        "FIRING s/d n/a 80.0"
    )


def test_unknown_template_field_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[channels]]\nname = "c"\ntype = "console"\ntemplate = "{nope}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    (problem,) = info.value.problems
    assert problem.line == 4
    assert "unknown template field 'nope'" in problem.message


def test_every_channel_type_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        """
[[channels]]
name = "f"
type = "file"
path = "n.jsonl"
[[channels]]
name = "s"
type = "slack"
url = "https://hooks.example/x"
[[channels]]
name = "m"
type = "mqtt"
topic_template = "alerts/{site}/{device}"
retain = true
[[channels]]
name = "e"
type = "email"
sender = "a@b"
to = ["c@d"]
security = "starttls"
group_wait = "30s"
[[channels]]
name = "am"
type = "alertmanager"
url = "http://127.0.0.1:9093/"
resend_interval = "1m"
[channels.rate_limit]
rate = 10
burst = 20
[channels.match]
site = "plant-*"
"""
    )
    settings = load_settings(path, {})
    assert [c.type for c in settings.channels] == ["file", "slack", "mqtt", "email", "alertmanager"]
    am = settings.channels[4]
    assert am.rate_limit == RateLimitSettings(rate=10, burst=20)
    assert am.match is not None
    assert am.match.site == "plant-*"


def test_mqtt_topic_with_a_wildcard_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[channels]]\nname = "m"\ntype = "mqtt"\ntopic_template = "a/+/b"\n')
    with pytest.raises(ConfigError, match="wildcards"):
        load_settings(path, {})


def test_hmac_signature_is_sha256_of_the_body() -> None:
    # RFC 4231 test case 2
    assert signature(b"Jefe", b"what do ya want for nothing?") == (
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_email_subject_counts_the_batch() -> None:
    settings = Settings.model_validate(
        {"channels": [{"name": "e", "type": "email", "sender": "a@b", "to": ["c@d", "e@f"]}]}
    )
    ch = settings.channels[0]
    assert isinstance(ch, EmailChannelSettings)
    events = [AlertEvent.model_validate(make_event(device=f"t-{i}")) for i in range(3)]
    msg = build_message(ch, events)
    assert msg["Subject"] == "[FIRING] critical-temperature on plant-1/t-0 (+2 more)"
    assert msg["To"] == "c@d, e@f"
    assert msg.get_content().count("FIRING critical critical-temperature") == 3


def test_missing_secret_files_are_named_with_their_line(tmp_path: Path) -> None:
    (tmp_path / "present.secret").write_text("k")
    path = tmp_path / "s.toml"
    path.write_text(
        "[[channels]]\n"  # 1
        'name = "w"\n'
        'type = "webhook"\n'
        'url = "http://127.0.0.1:1/"\n'
        'hmac_secret_file = "present.secret"\n'  # 5: exists, relative to the config
        "[[channels]]\n"
        'name = "e"\n'
        'type = "email"\n'
        'sender = "a@b"\n'
        'to = ["c@d"]\n'
        'password_file = "missing.pw"\n'  # 11
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, {})
    (problem,) = info.value.problems
    assert problem.line == 11
    assert problem.message == f"channels[1].password_file: cannot read {tmp_path / 'missing.pw'}"


def test_alertmanager_channel_queue_has_a_single_active_consumer() -> None:
    settings = Settings.model_validate(
        {"channels": [{"name": "am", "type": "alertmanager", "url": "http://127.0.0.1:9093"}]}
    )
    specs = {s.name: s for s in channel_queues(AmqpSettings(prefix="p"), settings.channels[0])}
    assert specs["p.notify.am"].arguments["x-single-active-consumer"] is True
    assert "x-single-active-consumer" not in channel_queues(AmqpSettings(), channel())[1].arguments
