"""`probefleet dev`: the whole system on embedded servers.

dev, in order: read the --config file; lock the data directory and check that its ports
can be bound; make the fleet's NATS trust in DIR/trust on first start (kept, like the
database); start the mail and webhook catchers, NATS (operator mode, TLS) and PostgreSQL;
create the admin key; start a controller with the trust; once it answers, a probe per
region that enrolls on first start with a one-use token (its own nkey and credential, kept
in DIR/probes/<region>), as children: what developers run daily is the secure path, the
one users take. It says "up" only once that
controller answered an admin request made with that key, as itself. A refusal before
anything started exits 2 (like a usage error); a failure after stops what was started.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import click

from probefleet.shared import devstack
from probefleet.shared.config import env_setting

if TYPE_CHECKING:
    from probefleet.controller.config import ControllerConfig

DEV_REGIONS = {"us-east": "127.0.0.11", "eu-west": "127.0.0.12", "ap-south": "127.0.0.13"}
DEV_DATABASE = "probefleet"
HOST = "127.0.0.1"
# Loopback receivers (the catchers, a test's server) are what dev is for; a --config file
# or the variable may still say otherwise.
ALLOW_PRIVATE = {
    "notification_channels_allow_private": "NOTIFICATION_CHANNELS_ALLOW_PRIVATE",
    "subscriber_webhooks_allow_private": "SUBSCRIBER_WEBHOOKS_ALLOW_PRIVATE",
}
# dev sets the NATS connection and enrollment of its children itself: inherited ones would
# point them elsewhere or switch the secure path off.
_NATS_VARIABLES = {
    "PROBEFLEET_NATS_URL",
    "PROBEFLEET_NATS_CREDENTIALS",
    "PROBEFLEET_NATS_TLS_CA",
    "PROBEFLEET_NATS_INSECURE",
    "PROBEFLEET_FLEET_TRUST_DIR",
    "PROBEFLEET_FLEET_NATS_URLS",
    "PROBEFLEET_PROBE_ID",
    "PROBEFLEET_STATE_DIR",
    "PROBEFLEET_ENROLL_TOKEN",
    "PROBEFLEET_CONTROLLER_URL",
}
# Loopback only: an http_proxy in the environment must not see these requests.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DevRefusedError(click.ClickException):
    """dev cannot start as asked (a port taken, the data directory in use); nothing was
    started. Exit 2, as for a usage error."""

    exit_code = 2


def _child(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "probefleet.shared.cli", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        preexec_fn=devstack._die_with_parent(signal.SIGTERM),
    )


def check_port(port: int, what: str, option: str) -> None:
    """DevRefusedError unless 127.0.0.1:`port` can be bound the way aiohttp binds it
    (SO_REUSEADDR: a port left in TIME_WAIT by the last run is free; a listener is not)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            reason = "another program listens there" if e.errno == errno.EADDRINUSE else e.strerror
            raise DevRefusedError(
                f"cannot use port {port} on {HOST} for {what}: {reason}. "
                f"Use {option} 0 for any free port, or another {option}."
            ) from None


def lock_data_dir(data_dir: Path) -> int:
    """An exclusive lock on DIR/dev.lock, held until this process exits (the kernel drops it
    then, even after SIGKILL). Two dev on one directory would start two PostgreSQL servers
    on one data folder: the second start deletes a postmaster.pid it takes for stale."""
    fd = os.open(data_dir / "dev.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 20).decode(errors="replace").strip()
        os.close(fd)
        pid = f" (pid {holder})" if holder.isdigit() else ""
        raise DevRefusedError(
            f"another probefleet dev is using {data_dir}{pid}: stop it, or give this one another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _claim(data_dir: Path, ports: list[tuple[int, str, str]]) -> int:
    """The data directory's lock (lock_data_dir) once the (port, what, option) ports are free
    (check_port; 0 needs no check). The lock comes first when the directory exists, so
    `make dev` run twice in one clone is told that, not that port 8080 is taken; a new
    directory is made only once the ports are free, so a refusal writes nothing."""
    lock = lock_data_dir(data_dir) if data_dir.is_dir() else None
    try:
        for port, what, option in ports:
            if port:
                check_port(port, what, option)
    except DevRefusedError:
        if lock is not None:
            os.close(lock)
        raise
    if lock is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = lock_data_dir(data_dir)
    return lock


def _load_config(path: Path | None) -> tuple[ControllerConfig, set[str]]:
    """The controller's configuration before dev's own variables, and the names the file sets."""
    from probefleet.controller.config import load
    from probefleet.shared.config import read_file

    try:
        return load(path), set(read_file(path)) if path else set()
    except (ValueError, OSError) as e:  # ConfigError is a ValueError
        raise click.ClickException(f"invalid configuration: {e}") from None


def _request(url: str, key: str | None = None, body: object = None) -> tuple[int, bytes]:
    """(HTTP status, body) of a GET, or of a POST of `body` as JSON; (0, b"") when nothing answers."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        with _OPENER.open(urllib.request.Request(url, data, headers=headers), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def _answered_as(body: bytes) -> str | None:
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return str(json.loads(body)["data"]["controller_id"])
    return None


def wait_up(
    base: str, key: str, controller_id: str, proc: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    """Return once `proc` serves `base`: the health endpoint answers 200, then an admin
    request with this dev's key answers 200 with its controller_id while it still runs.
    A server that took the port after check_port fails the second step (a ClickException
    saying what answered); so does a controller that exited."""
    deadline = time.monotonic() + timeout
    while _request(f"{base}/api/v1/health")[0] != 200:
        if proc.poll() is not None:
            raise click.ClickException(f"the controller exited with code {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise click.ClickException(f"the controller did not answer on {base} within {timeout:.0f}s")
        time.sleep(0.2)
    status, body = _request(f"{base}/api/v1/health/details", key)
    answered = _answered_as(body) if status == 200 else None
    if proc.poll() is not None:
        raise click.ClickException(f"the controller exited with code {proc.returncode} while starting")
    if answered != controller_id:
        got = f"controller {answered!r}" if answered else f"HTTP {status}" if status else "no answer"
        raise click.ClickException(
            f"another server answers on {base}: this dev's admin key got {got} there, not an answer from "
            f"its own controller {controller_id!r}"
        )


async def _admin_key(dsn: str, key_file: Path) -> tuple[str, bool]:
    """The dev admin key: created on first run, kept in .probefleet/ (dev only)."""
    from probefleet.controller.storage import api_keys, db

    await db.migrate(dsn)
    if key_file.exists():
        return key_file.read_text().strip(), False
    pool = await db.create_pool(dsn, max_size=1)
    try:
        key, _ = await api_keys.create(pool, "dev-admin", ["admin"])
    finally:
        await pool.close()
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key, True


async def _admin_login(dsn: str, login_file: Path) -> tuple[str, str]:
    """The console's first admin, "admin" with a made-up password: created on first run and
    kept in .probefleet/ beside the key (dev only)."""
    import secrets

    from probefleet.controller.console import accounts
    from probefleet.controller.storage import db
    from probefleet.controller.storage import users as user_store

    if login_file.exists():
        username, _, password = login_file.read_text().strip().partition(" ")
        return username, password
    password = secrets.token_urlsafe(12)
    pool = await db.create_pool(dsn, max_size=1)
    try:
        if await user_store.credentials(pool, "admin") is None:
            await accounts.create_user(pool, "admin", password, "admin")
        else:
            hashed = accounts.hash_password(password)
            user = await user_store.credentials(pool, "admin")
            assert user is not None
            await user_store.update(pool, user["id"], password_hash=hashed, disabled=False)
    finally:
        await pool.close()
    login_file.write_text(f"admin {password}\n")
    login_file.chmod(0o600)
    return "admin", password


def _enroll_args(base: str, key: str, region: str, state_dir: Path) -> list[str]:
    """`probe run` options for dev's probe of `region`: its state directory, and on first start
    a one-use enrollment token made with the admin key, so the probe enrolls the way a user's
    does (its own nkey, its credential kept in `state_dir`); later starts re-use it."""
    args = ["--state-dir", str(state_dir)]
    if (state_dir / "probe.json").exists():
        return args
    status, body = _request(
        f"{base}/api/v1/regions/{region}/enrollment-tokens", key, {"expires_in": 600, "max_uses": 1}
    )
    try:
        token = str(json.loads(body)["data"]["token"])
    except (ValueError, TypeError, KeyError):
        detail = body.decode(errors="replace")[:300]
        raise click.ClickException(
            f"cannot make an enrollment token for {region}: HTTP {status} {detail}"
        ) from None
    return [*args, "--enroll", token, "--controller", base]


def _controller_env(cfg: ControllerConfig, file_keys: set[str], smtp_port: int) -> dict[str, str]:
    """dev's variables for its controller (besides the database and NATS URLs): its id, so
    wait_up can tell it from another server; loopback receivers allowed unless the file or
    the variable decides; the mail catcher unless the configuration names an SMTP server."""
    env = {"PROBEFLEET_CONTROLLER_ID": cfg.controller_id}
    for key, name in ALLOW_PRIVATE.items():
        if key not in file_keys and env_setting(name) is None:
            env[f"PROBEFLEET_{name}"] = "true"
    if smtp_port:
        env.update(
            {
                "PROBEFLEET_SMTP_HOST": HOST,
                "PROBEFLEET_SMTP_PORT": str(smtp_port),
                "PROBEFLEET_SMTP_SECURITY": "none",
            }
        )
    return env


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".probefleet"),
    show_default=True,
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="The controller's port on 127.0.0.1; 0 picks a free one.",
)
@click.option(
    "--webhook-port",
    type=click.IntRange(0, 65535),
    help="The webhook catcher's port  [default: --port plus 1; a free one with --port 0]",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The controller's config file, as for `controller serve --config`; dev's own "
    "NATS, PostgreSQL, host and port win over the file's.",
)
def dev(data_dir: Path, port: int, webhook_port: int | None, config_path: Path | None) -> None:
    """Start NATS, PostgreSQL, a controller, probes in three regions, and catchers for its
    mail and webhooks (Ctrl-C stops all)."""
    data_dir = data_dir.resolve()
    cfg, file_keys = _load_config(config_path)
    if webhook_port is None:
        webhook_port = port + 1 if 0 < port < 65535 else 0
    if port and port == webhook_port:
        raise DevRefusedError(f"--port and --webhook-port are both {port}")
    ports = [(port, "the controller", "--port"), (webhook_port, "the webhook catcher", "--webhook-port")]
    lock = _claim(data_dir, ports)
    for name in sorted(
        {"database_url", "nats_url", "nats_credentials", "nats_tls_ca", "fleet_trust_dir"} & file_keys
    ):
        click.echo(f"note: {config_path} sets {name}; dev uses its own NATS and PostgreSQL", err=True)
    try:
        _run(data_dir, port, webhook_port, config_path, cfg, file_keys)
    finally:
        os.close(lock)


def _run(
    data_dir: Path,
    port: int,
    webhook_port: int,
    config_path: Path | None,
    cfg: ControllerConfig,
    file_keys: set[str],
) -> None:
    from probefleet.controller.cluster import trust as trust_mod
    from probefleet.controller.dev import catchers as catchers_mod

    trust_dir = data_dir / "trust"
    stack = devstack.EmbeddedStack(data_dir)
    catchers = catchers_mod.Catchers(None if cfg.smtp_host else data_dir / "mail", webhook_port, click.echo)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        try:
            catchers.start()
        except OSError as e:
            raise click.ClickException(f"cannot start the catchers: {e}") from None
        click.echo("starting NATS and PostgreSQL ...")
        try:
            trust_mod.generate(trust_dir, hostnames=["localhost"])
        except (OSError, trust_mod.TrustError) as e:
            raise click.ClickException(f"cannot make the fleet trust in {trust_dir}: {e}") from None
        stack.nats.trust_conf = trust_mod.server_config(
            trust_dir, resolver_dir=stack.nats.data_dir / "resolver"
        )
        stack.nats.tls = True
        try:
            stack.start()
        except devstack.DevStackError as e:
            logs = f"{stack.nats.data_dir / 'nats.log'}, {stack.postgres.data_dir / 'postgres.log'}"
            raise click.ClickException(f"{e} (logs: {logs})") from None
        asyncio.run(devstack.create_database(stack.postgres.dsn(), DEV_DATABASE))
        dsn = stack.postgres.dsn(DEV_DATABASE)
        key, new = asyncio.run(_admin_key(dsn, data_dir / "admin.key"))
        login = asyncio.run(_admin_login(dsn, data_dir / "admin.login"))
        # Chosen now that NATS, PostgreSQL and the catchers hold their ports.
        port = port or devstack.free_port()
        inherited = {k: v for k, v in os.environ.items() if k not in _NATS_VARIABLES}
        env = {
            **inherited,
            "PROBEFLEET_DATABASE_URL": dsn,
            "PROBEFLEET_NATS_URL": stack.nats.url,
            "PROBEFLEET_FLEET_TRUST_DIR": str(trust_dir),
            "PROBEFLEET_NATS_CREDENTIALS": str(trust_dir / "controller.creds"),
            "PROBEFLEET_NATS_TLS_CA": str(trust_dir / "ca.pem"),
            **_controller_env(cfg, file_keys, catchers.smtp_port),
        }
        serve = ["controller", "serve", "--host", HOST, "--port", str(port)]
        children.append(("the controller", _child([*serve, *_config_args(config_path)], env)))
        base = f"http://{HOST}:{port}"
        wait_up(base, key, cfg.controller_id, children[0][1])
        for region, address in DEV_REGIONS.items():
            enroll = _enroll_args(base, key, region, data_dir / "probes" / region)
            probe = ["probe", "run", "--region", region, "--source-address", address, *enroll]
            children.append((f"the {region} probe", _child(probe, env)))
        mail = (
            f"mail catcher smtp://{HOST}:{catchers.smtp_port} (messages in {catchers.mail_dir})"
            if catchers.mail_dir
            else f"mail: {cfg.smtp_host}:{cfg.smtp_port} as configured (no mail catcher)"
        )
        servers = [
            f"NATS {stack.nats.url} (TLS, a credential per probe; trust in {trust_dir})   PostgreSQL {dsn}",
            mail,
            f"webhook catcher {catchers.webhook_url}",
        ]
        _banner(base, time.monotonic() - started, key, new, data_dir / "admin.key", servers)
        click.echo(
            f"  console: {base}/  user {login[0]}  password {login[1]}  (kept in {data_dir / 'admin.login'})"
        )
        while not (gone := [(n, c) for n, c in children if c.poll() is not None]):
            time.sleep(0.5)
        name, child = gone[0]
        raise click.ClickException(f"{name} exited with code {child.returncode}; stopping everything")
    except KeyboardInterrupt:
        click.echo("\nstopping ...")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _, child in reversed(children):
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for _, child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        stack.stop()
        catchers.stop()


def _config_args(path: Path | None) -> list[str]:
    return ["--config", str(path)] if path else []


def _banner(base: str, took: float, key: str, new: bool, key_file: Path, servers: list[str]) -> None:
    click.echo(f"\nprobefleet is up in {took:.1f}s: {base}")
    for line in servers:
        click.echo(f"  {line}")
    click.echo(f"  admin API key{' (new)' if new else ''}: {key}  (kept in {key_file})")
    click.echo(
        "\nTry:\n"
        f"  curl -s -X POST {base}/api/v1/monitors -H 'Authorization: Bearer {key}' \\\n"
        "    -H 'Content-Type: application/json' \\\n"
        '    -d \'{"name": "local", "url": "' + base + '/api/v1/health",'
        ' "check_interval": 10}\'\n'
        f"  curl -s {base}/api/v1/monitors -H 'Authorization: Bearer {key}'\n"
        "\nThe catchers print what they receive here (README.md: Trying notifications and status"
        " pages locally).\nCtrl-C stops everything."
    )
