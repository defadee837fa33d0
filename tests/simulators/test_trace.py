"""sensord-sim record and replay: the trace format, then record -> replay on the real broker."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from pathlib import Path

import pytest

from simulators.trace import TraceError, TraceMessage, TraceSource, encode_record, read_trace
from tests.support import MqttPublisher, SimProcess, run_sim, start_recorder


@pytest.mark.parametrize(
    "payload",
    [b'{"value": 21.5}', "h\u00e9llo \u2603".encode(), b"\xff\xfe\x00binary", b"", b"NaN"],
)
def test_a_record_keeps_the_payload_bytes_exactly(tmp_path: Path, payload: bytes) -> None:
    line = encode_record(1.5, "a/b/c/d", payload)
    assert ("payload_b64" in json.loads(line)) == (payload == b"\xff\xfe\x00binary")
    path = tmp_path / "t.jsonl"
    path.write_text('{"sensord_trace": 1, "topics": ["a/#"]}\n' + line + "\n")
    assert list(read_trace(str(path))) == [TraceMessage(1.5, "a/b/c/d", payload)]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('{"sensord_trace": 9}\n', 1, "trace format 9"),
        ('{"t": 0, "topic": "a", "payload": "x"}\n{"t": 1, "payload": "x"}\n', 2, "missing"),
        ('{"t": 0, "topic": "a", "payload_b64": "***"}\n', 1, "not a trace record"),
        ("{not json\n", 1, "not a trace record"),
    ],
)
def test_a_broken_trace_names_file_and_line(
    tmp_path: Path, text: str, where: int, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(TraceError, match=message) as exc:
        list(read_trace(str(path)))
    assert str(exc.value).startswith(f"{path}:{where}: ")


def test_replay_schedule_scales_the_original_spacing() -> None:
    trace = [TraceMessage(t, "a", b"x") for t in (10.0, 10.5, 12.0, 20.0)]
    source = TraceSource(trace, speed=4)
    assert [source.due(j) for j in range(4)] == [0.0, 0.125, 0.5, 2.5]
    assert source.take(0.2) == trace[:2]
    assert source.take(10, limit=1) == trace[2:3]
    assert source.next_due == 2.5
    assert source.take(10) == trace[3:]
    assert source.done
    assert [TraceSource(trace, speed=0).due(j) for j in range(4)] == [0.0] * 4


def _recorder(root: str, out: Path, count: int) -> contextlib.AbstractContextManager[SimProcess]:
    return start_recorder(
        *("--topics", f"{root}/#", "-o", str(out), "--count", str(count)),
        *("--client-id", f"simtest-rec-{uuid.uuid4()}", "--json"),
    )


def _finish(recorder: SimProcess) -> dict[str, float]:
    recorder.wait(timeout=20)
    assert recorder.returncode == 0, recorder.err
    summary: dict[str, float] = json.loads(recorder.out)
    return summary


def test_record_then_replay_reproduces_payloads_and_relative_timing(tmp_path: Path) -> None:
    root = f"simtest-{uuid.uuid4().hex[:12]}"
    original, replayed = tmp_path / "original.jsonl", tmp_path / "replayed.jsonl"
    count = 83
    with _recorder(root, original, count) as recorder:
        # 80 readings over ~1 s, then two payloads that are not UTF-8 text and one empty.
        done = run_sim(
            *("--topic-root", root, "--sensors", "4", "--rate", "20", "--count", "80"),
            *("--client-id", f"simtest-pub-{uuid.uuid4()}", "--quiet"),
        )
        assert done.returncode == 0, done.stderr
        pub = MqttPublisher()
        try:
            for payload in (b"\xff\xfe\x00", b"", b"\x80abc"):
                time.sleep(0.1)
                pub.publish(f"{root}/plant-9/x-1/temperature", payload)
        finally:
            pub.close()
        assert _finish(recorder)["recorded"] == count

    speed = 2.0
    with _recorder(root, replayed, count) as recorder:
        done = run_sim(
            *("replay", str(original), "--speed", str(speed), "--json", "--quiet"),
            *("--client-id", f"simtest-rep-{uuid.uuid4()}"),
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["sent"] == count
        assert _finish(recorder)["recorded"] == count

    first, second = list(read_trace(str(original))), list(read_trace(str(replayed)))
    assert [(m.topic, m.payload) for m in second] == [(m.topic, m.payload) for m in first]
    assert [m.payload for m in first[-3:]] == [b"\xff\xfe\x00", b"", b"\x80abc"]
    span = first[-1].t - first[0].t
    assert span > 1.0
    for a, b in zip(first, second, strict=True):
        assert b.t == pytest.approx(a.t / speed, abs=0.05 + 0.03 * a.t / speed)
