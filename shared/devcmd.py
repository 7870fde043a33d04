"""`probefleet dev` (the whole system on embedded servers) and `probefleet check-config`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click

from shared import devstack

DEV_REGIONS = {"us-east": "127.0.0.11", "eu-west": "127.0.0.12", "ap-south": "127.0.0.13"}
DEV_DATABASE = "probefleet"


def _child(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", *args], env=env, stdin=subprocess.DEVNULL,
        preexec_fn=devstack._die_with_parent(signal.SIGTERM),
    )  # fmt: skip


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise click.ClickException(f"controller exited with code {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.2)
    raise click.ClickException(f"controller not ready at {url}")


async def _admin_key(dsn: str, key_file: Path) -> tuple[str, bool]:
    """The dev admin key: created on first run, kept in .probefleet/ (dev only)."""
    from controller.storage import api_keys, db

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


@click.command()
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path(".probefleet"), show_default=True)  # fmt: skip
@click.option("--port", type=int, default=8080, show_default=True)
def dev(data_dir: Path, port: int) -> None:
    """Start NATS, PostgreSQL, a controller and probes in three regions (Ctrl-C stops all)."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    stack = devstack.EmbeddedStack(data_dir)
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        click.echo("starting NATS and PostgreSQL ...")
        stack.start()
        admin_dsn = stack.postgres.dsn()
        asyncio.run(devstack.create_database(admin_dsn, DEV_DATABASE))
        dsn = stack.postgres.dsn(DEV_DATABASE)
        key, new = asyncio.run(_admin_key(dsn, data_dir / "admin.key"))
        env = {**os.environ, "PROBEFLEET_DATABASE_URL": dsn,
               "PROBEFLEET_NATS_URL": stack.nats.url}  # fmt: skip
        controller = _child(["controller", "serve", "--port", str(port)], env)
        children.append(controller)
        for region, address in DEV_REGIONS.items():
            children.append(_child(["probe", "run", "--region", region,
                                    "--source-address", address], env))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/api/v1/health", controller)
        click.echo(f"\nprobefleet is up in {time.monotonic() - started:.1f}s: {base}")
        click.echo(f"  NATS {stack.nats.url}   PostgreSQL {dsn}")
        click.echo(f"  admin API key{' (new)' if new else ''}: {key}  (kept in {data_dir}/admin.key)")
        click.echo("\nTry:\n"
                   f"  curl -s -X POST {base}/api/v1/monitors -H 'Authorization: Bearer {key}' \\\n"
                   "    -H 'Content-Type: application/json' \\\n"
                   "    -d '{\"name\": \"local\", \"url\": \"" + base + "/api/v1/health\","
                   " \"check_interval\": 10}'\n"
                   f"  curl -s {base}/api/v1/monitors -H 'Authorization: Bearer {key}'\n"
                   "\nCtrl-C stops everything.")  # fmt: skip
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        raise click.ClickException("a child process exited; stopping")
    except KeyboardInterrupt:
        click.echo("\nstopping ...")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in reversed(children):
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        stack.stop()


@click.command("check-config")
@click.option("--role", type=click.Choice(["controller", "probe"]), default="controller",
              show_default=True)  # fmt: skip
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def check_config(role: str, config_path: Path | None) -> None:
    """Validate configuration (file plus PROBEFLEET_* variables) and print it, secrets redacted."""
    import msgspec

    from shared.redact import redact_url

    if role == "controller":
        from controller.config import ConfigError, load

        try:
            cfg = load(config_path)
        except (ConfigError, OSError) as e:
            raise click.ClickException(f"invalid configuration: {e}") from None
        data = msgspec.to_builtins(cfg)
        data["database_url"] = redact_url(cfg.database_url)
        data["nats_url"] = redact_url(cfg.nats_url)
        for secret in ("status_page_secret", "smtp_password"):
            if data.get(secret):
                data[secret] = "<redacted>"
    else:
        from probe.config import load_probe_config

        try:
            pcfg = load_probe_config(config_path)
        except (ValueError, OSError) as e:
            raise click.ClickException(f"invalid configuration: {e}") from None
        data = msgspec.to_builtins(pcfg)
        data["nats_url"] = redact_url(pcfg.nats_url)
    click.echo(msgspec.json.format(msgspec.json.encode(data)).decode())
