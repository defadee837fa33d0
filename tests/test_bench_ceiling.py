"""`python -m bench.ceiling` runs end to end on a tiny load, and its bare receiver drains a
session for real: every message received once, nothing left unacknowledged.

No rate is asserted (CONVENTIONS.md point 10).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.broker import PrivateMosquitto
from bench.ceiling import BARE
from bench.product import Config, create_session, delete_session
from bench.product_load import TOPIC_FILTER, publish_backlog
from tests.support import run_bench

READINGS = 1500
# enough that a receiver quitting before the broker took its PUBACKs leaves thousands
# behind (seen: 16,870 of 20,000)
BACKLOG = 20_000


def _left_in_session(port: int, client_id: str) -> int:
    """Messages the broker still holds for the session: mosquitto_sub takes them for 1 s."""
    proc = subprocess.run(
        [
            *("mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-i", client_id, "-q", "1"),
            *("-t", TOPIC_FILTER, "-c", "-W", "1"),
        ],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return proc.stdout.count(b"\n")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["frames", "json"])
def test_bare_client_drains_the_session_and_leaves_nothing_unacknowledged(mode: str) -> None:
    cfg = Config(readings=BACKLOG, sensors=100)
    with PrivateMosquitto(max_inflight=20) as broker:
        client_id = f"ceiltest-{mode}"
        create_session(cfg, broker.port, client_id)
        try:
            publish_backlog(
                broker.port, shape="calm", readings=BACKLOG, sensors=100, client_id="ceilpub"
            )
            done = subprocess.run(
                [sys.executable, str(BARE), str(broker.port), client_id, str(BACKLOG), mode],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            assert done.returncode == 0, done.stderr
            assert int(done.stdout) == BACKLOG  # the PUBLISHes it counted
            # a receiver that quit before the broker took its PUBACKs would get them again
            assert _left_in_session(broker.port, client_id) == 0
        finally:
            delete_session(cfg, broker.port, client_id)


@pytest.mark.timeout(60)
def test_ceiling_bench_reports_each_receiver_and_the_floor() -> None:
    result = run_bench(
        "bench.ceiling", "--readings", str(READINGS), "--sensors", "100", "--runs", "1", timeout=55
    )

    assert result["benchmark"] == "ceiling"
    assert "no sensord" in result["scope"]
    assert result["stack_import_s"]["median"] > 0
    window = result["results"]["window_20"]
    (run,) = window["runs"]
    for receiver in ("mosquitto_sub", "bare_frames", "bare_json"):
        assert run[receiver]["received"] == READINGS, receiver
        assert window[f"{receiver}_msgs_per_s"]["median"] > 0, receiver
    assert window["bare_json_ratio"]["median"] > 0
    assert window["floor_ratio"]["median"] > 0
