"""The embedded stack starts real servers and leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import asyncpg
import nats

from shared.devstack import NatsServer, PostgresServer, reachable_dir


async def test_it_serves_sql_and_jetstream(postgres: PostgresServer, nats_server: NatsServer) -> None:
    conn = await asyncpg.connect(postgres.dsn())
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
    finally:
        await conn.close()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    info = await js.account_info()
    assert info.limits is not None
    await nc.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_it_leaves_no_server_when_the_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from shared.devstack import EmbeddedStack
        s = EmbeddedStack(Path({str(tmp_path)!r}), ephemeral=True)
        s.start()
        print(s.nats.proc.pid, s.postgres.proc.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent
    )
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)
    # Killed parents cannot clean up: remove the data a stand-in folder may hold.
    shutil.rmtree(reachable_dir(tmp_path / "postgres").parent, ignore_errors=True)


def test_ephemeral_postgres_leaves_no_data_behind(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg", ephemeral=True)
    server.start()
    where = server.data_dir
    assert (where / "pgdata" / "PG_VERSION").exists()
    server.stop()
    assert not where.exists()
