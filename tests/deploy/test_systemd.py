"""deploy/systemd: `systemd-analyze verify` accepts both units (the probe template as an
instance) with no warning at all, and `systemd-analyze security --offline` rates their
sandbox "OK" or better. Skipped where systemd-analyze is missing (not a systemd host).

The copies point ExecStart at this checkout's `probefleet` (verify checks that the
program exists and is executable); everything else is the unit as shipped."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here")
INSTALLED = "/opt/probefleet/bin/probefleet"
UNITS = ["probefleet-controller.service", "probefleet-probe@eu-west.service"]


@pytest.fixture
def units(tmp_path: Path) -> Path:
    here = str(Path(sys.executable).parent / "probefleet")
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text()
        assert INSTALLED in text, unit.name
        (tmp_path / unit.name).write_text(text.replace(INSTALLED, here))
    shutil.copy(tmp_path / "probefleet-probe@.service", tmp_path / "probefleet-probe@eu-west.service")
    return tmp_path


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE
    return subprocess.run([SYSTEMD_ANALYZE, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_systemd_analyze_verify_accepts_the_units_without_a_warning(units: Path) -> None:
    done = _analyze("verify", "--man=no", *(f"./{u}" for u in UNITS), cwd=units)
    assert (done.returncode, done.stderr) == (0, "")


def test_a_misspelt_directive_is_reported(units: Path) -> None:
    unit = units / "probefleet-controller.service"
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilegez=yes"))
    done = _analyze("verify", "--man=no", f"./{unit.name}", cwd=units)
    assert "Unknown key 'NoNewPrivilegez'" in done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_the_sandbox_is_rated_ok(units: Path, unit: str) -> None:
    done = _analyze("security", "--offline=true", "--no-pager", f"./{unit}", cwd=units)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", done.stdout)
    assert found, done.stdout + done.stderr
    # systemd's scale: 0-1.9 SAFE, 2-4.9 OK, 5-6.9 MEDIUM, 7+ EXPOSED/UNSAFE.
    assert float(found.group(1)) < 5.0 and found.group(2) in ("SAFE", "OK")
