"""`sensord check` as users run it: a subprocess, its exit code, one `file:line: message` each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "sensord-test"
topics = ["sensors/#"]

[rules]
paths = ["rules/*.yaml"]

[[channels]]
name = "console"
type = "console"
"""

RULES = """\
rules:
  - name: critical-temperature
    match: {kind: temperature}
    above: 80
    clear_below: 75
    for: 10s
    severity: critical
    annotations:
      summary: "{site}/{device} temperature {value:.1f} above {threshold:g}"
  - name: sensor-silent
    absent_for: 60s
"""


def setup(tmp_path: Path, config: str = CONFIG, rules: str = RULES) -> tuple[Path, Path]:
    """Write a config and one rule file; return their paths as sensord will print them."""
    base = tmp_path.resolve()
    (base / "rules").mkdir()
    config_path = base / "sensord.toml"
    config_path.write_text(config, encoding="utf-8")
    rules_path = base / "rules" / "main.yaml"
    rules_path.write_text(rules, encoding="utf-8")
    return config_path, rules_path


def check(
    cwd: Path, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "sensord", "check", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def problem_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert lines, "exit 1 must explain itself on stderr"
    return lines


def test_valid_config_and_rules(tmp_path: Path) -> None:
    config, _ = setup(tmp_path)
    result = check(tmp_path, "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert str(config) in result.stdout
    assert "ok" in result.stdout
    assert "2 rule(s)" in result.stdout
    assert "1 channel(s)" in result.stdout
    assert result.stderr == ""


def test_config_from_sensord_config_env(tmp_path: Path) -> None:
    config, _ = setup(tmp_path)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = check(elsewhere, env_extra={"SENSORD_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert str(config) in result.stdout


def test_unknown_config_key(tmp_path: Path) -> None:
    broken = CONFIG.replace('client_id = "sensord-test"', 'client_idd = "sensord-test"')
    config, _ = setup(tmp_path, config=broken)
    [line] = problem_lines(check(tmp_path, "-c", str(config)))
    assert line.startswith(f"{config}:3: ")
    assert "mqtt.client_idd" in line
    assert "unknown key" in line


def test_unknown_rule_field(tmp_path: Path) -> None:
    config, rules = setup(tmp_path, rules=RULES.replace("    for: 10s", "    fore: 10s"))
    [line] = problem_lines(check(tmp_path, "-c", str(config)))
    assert line.startswith(f"{rules}:6: ")
    assert "fore" in line
    assert "critical-temperature" in line


def test_yaml_syntax_error(tmp_path: Path) -> None:
    config, rules = setup(tmp_path, rules=RULES.replace("above: 80", "above: 80: 90"))
    [line] = problem_lines(check(tmp_path, "-c", str(config)))
    assert line.startswith(f"{rules}:4: ")
    assert "YAML" in line


def test_every_problem_of_every_rule_file(tmp_path: Path) -> None:
    config, rules = setup(tmp_path)
    duplicate = rules.with_name("other.yaml")
    duplicate.write_text("# copy\nrules:\n  - name: sensor-silent\n    absent_for: 5m\n")
    broken = rules.with_name("zz.yaml")
    broken.write_text("rules:\n  - name: z\n    below: 1\n    clear_below: 0\n")
    tagged = rules.with_name("zzz.yaml")  # a bad YAML tag is a problem, not a traceback
    tagged.write_text("rules:\n  - name: t\n    above: !!float hot\n")
    lines = problem_lines(check(tmp_path, "-c", str(config)))
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"{duplicate}:3: ")
    assert "sensor-silent" in lines[0]
    assert str(rules) in lines[0]
    assert lines[1].startswith(f"{broken}:2: ")
    assert "clear_below" in lines[1]
    assert lines[2].startswith(f"{tagged}:3: ")
    assert "hot" in lines[2]
