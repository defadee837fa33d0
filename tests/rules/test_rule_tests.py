"""`sensord rules test`: the shipped rule tests pass, cover every example rule, and a
failing expectation exits 1 with a readable diff."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from sensord.rules import load_rule_file
from sensord.rules.loader import read_yaml
from sensord.rules.testing import main, parse_values

ROOT = Path(__file__).resolve().parents[2]
TEST_FILES = sorted((ROOT / "rules" / "tests").glob("*.yaml"))


def test_shipped_rule_tests_pass_through_the_cli() -> None:
    assert TEST_FILES
    proc = subprocess.run(
        [sys.executable, "-m", "sensord", "rules", "test", *map(str, TEST_FILES)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(": ok (") == len(TEST_FILES)


def test_every_example_rule_is_tested() -> None:
    rule_files = sorted((ROOT / "rules").glob("*.yaml")) + sorted(
        (ROOT / "rules" / "examples").glob("*.yaml")
    )
    names = {r.name for f in rule_files for r in load_rule_file(f)}
    tested: set[str] = set()
    for path in TEST_FILES:
        data, _ = read_yaml(path)
        for test in data["tests"]:
            for check in test["alert_rule_test"]:
                for alert in check.get("firing", []) + check.get("resolved", []):
                    tested.add(alert["alertname"])
    assert names - tested == set()
    assert len(names) >= 9


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("70 75 _ 81", [70, 75, None, 81]),
        ("1x3 _x2 -2.5", [1, 1, 1, None, None, -2.5]),
        ("1e2 .5", [100, 0.5]),
        ("", []),
    ],
)
def test_parse_values(text: str, values: list[float | None]) -> None:
    assert parse_values(text) == values


@pytest.mark.parametrize("text", ["7O", "1x", "x3", "nan", "1,2"])
def test_parse_values_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="bad value"):
        parse_values(text)


RULES = """\
rules:
  - name: hot
    match: {kind: temperature}
    above: 80
    for: 2s
"""

TESTS = """\
rule_files: [rules.yaml]
tests:
  - name: hot after 2 s
    input_series:
      - topic: sensors/p/t-1/temperature
        values: "81 81 81 70"
      - labels: {site: p, device: t-2, kind: temperature, zone: north}
        values: "90x5"
    alert_rule_test:
      - at: 2s
        firing: [{alertname: hot, device: t-1}, {alertname: hot, zone: north}]
      - at: 3s
        firing: [{alertname: hot, device: t-2}]
        resolved: [{alertname: hot, device: t-1}]
"""


def run(tmp_path: Path, tests: str) -> tuple[int, str, str]:
    (tmp_path / "rules.yaml").write_text(RULES)
    path = tmp_path / "t.yaml"
    path.write_text(tests)
    out, err = io.StringIO(), io.StringIO()
    code = main([path], out, err)
    return code, out.getvalue(), err.getvalue()


def test_passing_file(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, TESTS)
    assert (code, err) == (0, "")
    assert out == f"{tmp_path / 't.yaml'}: ok (2 check(s))\n"


def test_failing_expectation_prints_a_diff(tmp_path: Path) -> None:
    wrong = TESTS.replace("      - at: 2s", "      - at: 1s")
    code, out, _ = run(tmp_path, wrong)
    assert code == 1
    assert out.splitlines() == [
        f"{tmp_path / 't.yaml'}: test hot after 2 s, at 1s:",
        "  firing:",
        "    - expected, not there: {alertname: hot, device: t-1}",
        "    - expected, not there: {alertname: hot, zone: north}",
        f"{tmp_path / 't.yaml'}: FAILED (1 of 2 check(s))",
    ]


def test_unexpected_alerts_are_listed(tmp_path: Path) -> None:
    wrong = TESTS.replace("        firing: [{alertname: hot, device: t-2}]\n", "")
    code, out, _ = run(tmp_path, wrong)
    assert code == 1
    assert "    + there, not expected: {alertname: hot, device: t-2, kind: temperature," in out


@pytest.mark.parametrize(
    ("tests", "line", "words"),
    [
        (TESTS.replace('values: "90x5"', 'values: "90y5"'), 8, ["input_series[1].values"]),
        (TESTS.replace("      - at: 3s", "      - at: later"), 12, ["at", "invalid duration"]),
        (TESTS.replace("    input_series:", "    input:"), 3, ["input", "unknown key"]),
        (TESTS.replace("topic: sensors", "topik: sensors"), 5, ["topik"]),
        (TESTS.replace("[rules.yaml]", "[none.yaml]"), None, ["no rule file matches"]),
    ],
)
def test_bad_test_files_name_file_and_line(
    tmp_path: Path, tests: str, line: int | None, words: list[str]
) -> None:
    code, _, err = run(tmp_path, tests)
    assert code == 1
    first = err.splitlines()[0]
    if line is not None:
        assert first.startswith(f"{tmp_path / 't.yaml'}:{line}: "), err
    for word in words:
        assert word in err


def test_readme_rules_example_loads(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Rules\n") :]
    example = section[section.index("```yaml\n") + 8 : section.index("```\n", 10)]
    path = tmp_path / "readme.yaml"
    path.write_text(example)
    rules = load_rule_file(path)
    assert [r.name for r in rules] == ["critical-temperature", "vibration-average", "sensor-silent"]
    assert rules[1].aggregate is not None
    assert rules[2].expect == ["t-1", "t-2"]


GROUP_RULES = """\
rules:
  - name: site-warm
    match: {kind: temperature}
    aggregate: {fn: avg, window: 1m, by: [site]}
    above: 30
"""

GROUP_TESTS = """\
rule_files: [rules.yaml]
tests:
  - input_series:
      - topic: sensors/p/t-1/temperature
        values: "34 34"
      - topic: sensors/p/t-2/temperature
        values: "_ 20"
    alert_rule_test:
      - at: 0s
        firing: [{alertname: site-warm, site: p}]
      - at: 1s
        resolved: [{alertname: site-warm, site: p}]
"""


def test_a_group_case_sees_one_alert_from_several_devices(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(GROUP_RULES)
    path = tmp_path / "t.yaml"
    path.write_text(GROUP_TESTS)
    out, err = io.StringIO(), io.StringIO()
    assert main([path], out, err) == 0, out.getvalue() + err.getvalue()
    # at 1 s the site's mean is (34 + 34 + 20) / 3 = 29.3; an alert per device would differ
    path.write_text(GROUP_TESTS.replace("resolved: [", "firing: ["))
    out = io.StringIO()
    assert main([path], out, err) == 1
    assert "    + there, not expected: {alertname: site-warm, severity: warning, site: p}" in (
        out.getvalue()
    )
