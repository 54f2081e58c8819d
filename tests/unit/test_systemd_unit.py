"""The shipped systemd unit is valid: systemd-analyze only warns on bad keys, so the test
asserts that it printed nothing at all."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "etc" / "pgwarden.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian package systemd)")
def test_unit_verifies_without_warnings(tmp_path: Path) -> None:
    unit = tmp_path / "pgwarden.service"
    # verify checks that ExecStart exists: point it at an executable that does
    unit.write_text(UNIT.read_text().replace("/opt/pgwarden/venv/bin/pgwarden", "/bin/true"))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                         capture_output=True, text=True, timeout=60)
    problems = [ln for ln in out.stderr.splitlines() if "pgwarden.service" in ln]
    assert out.returncode == 0 and not problems, out.stderr


def test_unit_keeps_postgres_running_across_agent_restarts() -> None:
    text = UNIT.read_text()
    assert "KillMode=process" in text and "Type=notify" in text and "User=postgres" in text
