"""bench.heartbeat_pings' side-by-side run with Healthchecks (bench/healthchecks.py), without
a benchmark: the command line, how every process of a system is counted, what the bench
and `setup` say when Healthchecks is not provided, the release tag `setup` picks; and, when
an install is named by $PROBEFLEET_HEALTHCHECKS_DIR, one ping of each kind through it."""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bench import healthchecks as hc
from bench import heartbeat_pings as hb
from bench.common import cpu_seconds, process_tree


def test_arguments_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    args = hb.parse_args([])
    assert (args.seconds, args.connections, args.heartbeats, args.peer) == (20, 64, 100, None)
    args = hb.parse_args(["--seconds", "5", "--heartbeats", "7", "--no-record"])
    assert (args.seconds, args.heartbeats, args.no_record) == (5, 7, True)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--peer", "kuma"], "invalid choice: 'kuma'"),
        (["--seconds", "0"], "--seconds must be at least 1"),
        (["--heartbeats", "-3"], "--heartbeats must be at least 1"),
    ],
)
def test_bad_arguments_exit_2_with_a_reason(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        hb.parse_args(argv)
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


def test_peer_without_an_install_stops_before_any_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "manage.py").write_text("")
    monkeypatch.setenv(hc.ENV, str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        hb.parse_args(["--peer", "healthchecks"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    lacks = err.split("lacks", 1)[1].split(".\n", 1)[0]
    assert "src/hc/wsgi.py" in lacks and "venv/bin/gunicorn" in lacks
    assert "src/manage.py" not in lacks  # present, so not listed
    assert "bench.healthchecks setup" in err  # how to provide it


def test_setup_without_the_folder_says_how_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(hc.ENV, str(tmp_path / "absent"))
    result = CliRunner().invoke(hc.cli, ["setup"])
    assert result.exit_code == 2
    assert f"{hc.ENV}={tmp_path / 'absent'}: no such folder" in result.output
    assert "git --git-dir" in result.output and "archive" in result.output
    monkeypatch.setenv(hc.ENV, str(tmp_path))  # the folder, but no release unpacked in it
    result = CliRunner().invoke(hc.cli, ["setup"])
    assert result.exit_code == 2
    assert f"No Healthchecks source in {tmp_path / 'src'}" in result.output
    result = CliRunner().invoke(hc.cli, ["setup", "--git-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a git directory" in result.output
    assert not (tmp_path / "venv").exists()


def test_setup_picks_the_newest_release_tag(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    for tag in ("v3.9", "v3.10", "v3.10.1", "latest", "v4.0-rc1"):
        subprocess.run([*git, "tag", tag], check=True)
    assert hc.newest_tag(repo / ".git") == "v3.10.1"  # by version, not by text; no rc, no names


def test_lua_script_per_system() -> None:
    ours = hb.lua(["/api/v1/heartbeat/abc"], hb.RID_PROBEFLEET)
    assert 'local paths = {"/api/v1/heartbeat/abc"}' in ours and '"run-" .. math.random(1000)' in ours
    theirs = hb.lua([f"/ping/{uuid.UUID(int=1)}", f"/ping/{uuid.UUID(int=2)}"], hb.RID_HEALTHCHECKS)
    assert f'"/ping/{uuid.UUID(int=1)}", "/ping/{uuid.UUID(int=2)}"' in theirs
    # Healthchecks takes only a UUID as the run id: the format makes one for any draw.
    assert uuid.UUID(f"00000000-0000-4000-8000-{1000:012d}").version == 4
    assert "%012d" in theirs and theirs.count("wrk.format") == ours.count("wrk.format") == 4


def test_stored_pings_are_read_once_they_stop_moving() -> None:
    counts = iter([10, 40, 64, 64, 99])
    assert hb.settled(lambda: next(counts), interval=0.01) == 64
    with pytest.raises(RuntimeError, match="still moving"):
        hb.settled(itertools.count().__next__, timeout=0.2, interval=0.01)


BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
TREE = f"""
import subprocess, sys, time
burn = {BURN!r}
subprocess.run([sys.executable, "-c", burn], check=True)  # exits: reaped by this process
live = subprocess.Popen(
    [sys.executable, "-c", burn + "print('burnt', flush=True)\\ntime.sleep(120)"],
    stdout=subprocess.PIPE, text=True,
)
live.stdout.readline()
print("ready", flush=True)
time.sleep(120)
"""


def test_every_process_of_a_system_is_counted_live_or_reaped() -> None:
    """A root whose one child burnt CPU and exited, and whose other child burnt CPU and
    lives on: the system's CPU is theirs too, its processes and memory are the live tree."""
    root = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    try:
        assert root.stdout is not None
        ready, _, _ = select.select([root.stdout], [], [], 120)
        assert ready and root.stdout.readline().strip() == "ready"
        cpu = hb.system_cpu({"system": [root.pid]})
        assert cpu["system"] >= 0.55  # two 0.3 s burns, in clock ticks
        assert cpu_seconds(root.pid) < cpu["system"] - 0.5  # not the root's own time alone
        memory, processes = hb.system_memory({"system": [root.pid]})
        assert processes == 2  # the root and the live child; the reaped one is gone
        rss, pss = memory["system"]
        assert rss > 0 and 0 < pss <= rss
    finally:
        for p in reversed(process_tree(root.pid)):  # the child first, then the root
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        root.wait(30)


@pytest.fixture(scope="module")
def installed() -> Path:
    value = os.environ.get(hc.ENV)
    if not value:
        pytest.skip(
            f"{hc.ENV} is not set: the Healthchecks peer is installed outside the repository"
            " (python -m bench.healthchecks setup); set it to run this test"
        )
    root = Path(value)
    if hc.missing(root):
        pytest.skip(f"{hc.ENV}={value} has no Healthchecks install (lacks {', '.join(hc.missing(root))})")
    return root


def test_healthchecks_takes_a_ping_of_each_kind(installed: Path) -> None:
    seen: dict[str, Any] = {}

    def measure(
        base: str, paths: list[str], roots: dict[str, list[int]], stored: Callable[[], int]
    ) -> dict[str, Any]:
        before = stored()
        rid = "00000000-0000-4000-8000-000000000001"
        for suffix, data in (("", None), ("", b"backup ok"), (f"/start?rid={rid}", b""), ("/0", b"")):
            with urllib.request.urlopen(
                urllib.request.Request(base + paths[0] + suffix, data=data), timeout=30
            ) as r:
                assert r.status == 200
        seen.update(
            stored=stored() - before,
            paths=len(paths),
            processes=hb.system_memory(roots)[1],
            cpu=hb.system_cpu(roots),
            roots=roots,
        )
        return {}

    res = hc.run(installed, 3, "0", measure)
    assert res["code"].startswith("Healthchecks v")
    assert seen["stored"] == 4 and seen["paths"] == 3
    assert seen["processes"] >= 1 + hc.WORKERS + 1 + 1  # gunicorn and workers, sendalerts, postgres
    assert set(seen["cpu"]) == {"gunicorn", "sendalerts", "postgres"} and all(
        v > 0 for v in seen["cpu"].values()
    )
    for pids in seen["roots"].values():  # stopped afterwards
        assert not any(Path(f"/proc/{p}").exists() for p in pids)
