"""`make install` / `make uninstall` into a temporary root (DESTDIR), as a packager would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _install(destdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "install.sh"), *args],
        env={**os.environ, "DESTDIR": str(destdir), "PYTHON": "python3", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=400,
    )


@pytest.mark.timeout(500)
def test_install_into_destdir_then_uninstall_keeps_config(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    result = _install(dest)
    assert result.returncode == 0, result.stderr
    venv_python = dest / "opt/sensord/venv/bin/python"
    conf = dest / "etc/sensord/sensord.toml"
    unit = dest / "etc/systemd/system/sensord.service"
    assert conf.is_file()
    assert sorted(p.name for p in (dest / "etc/sensord/rules").iterdir()) == sorted(
        p.name for p in (ROOT / "rules").glob("*.yaml")
    )
    # the unit points at where the tree will live, not at DESTDIR
    text = unit.read_text()
    assert "ExecStart=/opt/sensord/venv/bin/sensord run -c /etc/sensord/sensord.toml" in text
    assert "@PREFIX@" not in text
    assert str(dest) not in text
    assert (
        (dest / "opt/sensord/venv/bin/sensord")
        .read_text()
        .startswith("#!/opt/sensord/venv/bin/python")
    )
    # the installed package works and validates the installed config and rules
    check = subprocess.run(
        [str(venv_python), "-m", "sensord", "check", "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    assert "2 rule(s)" in check.stdout
    # the status page's assets are package data: installed with the package, not the tree
    web = subprocess.run(
        [str(venv_python), "-c", "import sensord.http.statuspage as p; print(p.WEB_DIR)"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # not the source tree: `-c` would import sensord from the cwd
    )
    assert web.returncode == 0, web.stderr
    web_dir = Path(web.stdout.strip())
    assert str(ROOT) not in str(web_dir)
    for asset in ("index.html", "app.js", "style.css", "vendor/uPlot.iife.min.js",
                  "vendor/uPlot.min.css", "vendor/uPlot.LICENSE"):  # fmt: skip
        assert (web_dir / asset).is_file(), asset
    creds = dest / "etc/sensord/credentials"
    assert oct(creds.stat().st_mode & 0o777) == "0o700"
    assert (creds / "mqtt-password").is_file()

    # a second install never overwrites the user's config
    conf.write_text(conf.read_text() + "\n# my edit\n")
    again = _install(dest, INSTALL_VENV="0")
    assert again.returncode == 0, again.stderr
    assert conf.read_text().endswith("# my edit\n")
    assert "kept existing" in again.stderr

    removed = _install(dest, "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not (dest / "opt/sensord").exists()
    assert not unit.exists()
    assert conf.is_file()  # kept unless --purge

    purged = _install(dest, "uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (dest / "etc/sensord").exists()
