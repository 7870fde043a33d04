"""`probefleet controller ...`: serve, migrate, create-key, create-user, check-config."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from pathlib import Path
from typing import TextIO

import click

from probefleet.controller import config as config_mod
from probefleet.controller.api.scopes import ROLES, SCOPES
from probefleet.shared import logs

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML or JSON config file.",
)


def _load(config_path: Path | None, **overrides: object) -> config_mod.ControllerConfig:
    try:
        return config_mod.load(config_path, **overrides)
    except (config_mod.ConfigError, OSError) as e:
        raise click.ClickException(f"invalid configuration: {e}") from None


@click.group()
def controller() -> None:
    """The controller: REST API, scheduler, results, consensus."""


@controller.command()
@CONFIG_OPTION
@click.option("--database-url", envvar="PROBEFLEET_DATABASE_URL", help="PostgreSQL DSN.")
@click.option("--nats-url", envvar="PROBEFLEET_NATS_URL", help="NATS URL.")
@click.option("--host", envvar="PROBEFLEET_HOST", help="Listen address (default 127.0.0.1).")
@click.option("--port", envvar="PROBEFLEET_PORT", type=int, help="Listen port (default 8080).")
@click.option(
    "--insecure-nats",
    "nats_insecure",
    is_flag=True,
    default=None,
    help="Run on a NATS without authentication (or PROBEFLEET_NATS_INSECURE=true); warned at every start.",
)
@click.option(
    "--log-format",
    envvar="PROBEFLEET_LOG_FORMAT",
    type=click.Choice(["text", "json"]),
    help="Log lines as text (default) or JSON lines with the events' fields.",
)
def serve(
    config_path: Path | None,
    database_url: str | None,
    nats_url: str | None,
    host: str | None,
    port: int | None,
    nats_insecure: bool | None,
    log_format: str | None,
) -> None:
    """Run the controller until SIGTERM or Ctrl-C."""
    from aiohttp import web

    from probefleet.controller.app import build_app
    from probefleet.shared.redact import redact_url

    cfg = _load(
        config_path,
        database_url=database_url,
        nats_url=nats_url,
        host=host,
        port=port,
        nats_insecure=nats_insecure,
        log_format=log_format,
    )
    if (problem := config_mod.security_problem(cfg)) is not None:
        raise click.UsageError(problem)
    logs.setup(cfg.log_level, cfg.log_format, role="controller", controller_id=cfg.controller_id)
    if not cfg.nats_credentials_file():
        logging.getLogger("probefleet.controller").warning(
            "insecure NATS: the controller connects without a credential (--insecure-nats); anyone "
            "who reaches %s can read every job and publish results for any region",
            redact_url(cfg.nats_url),
        )
    try:
        app = build_app(cfg)
    except RuntimeError as e:
        # The trust module (cryptography, nkeys: about 9 MiB) is loaded only by a controller
        # given fleet_trust_dir, which is the only one that can raise its error.
        from probefleet.controller.cluster.trust import TrustError

        if isinstance(e, TrustError):
            raise click.ClickException(f"fleet trust: {e}") from None
        raise
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    from probefleet.shared.natscreds import NatsRefusedError

    try:
        web.run_app(app, host=cfg.host, port=cfg.port, print=None, access_log=None, shutdown_timeout=5)
    except NatsRefusedError as e:
        raise click.ClickException(str(e)) from None


@controller.command()
@CONFIG_OPTION
@click.option("--database-url", envvar="PROBEFLEET_DATABASE_URL", help="PostgreSQL DSN.")
def migrate(config_path: Path | None, database_url: str | None) -> None:
    """Apply pending database migrations (safe to run from several hosts at once)."""
    from probefleet.controller.storage import db

    cfg = _load(config_path, database_url=database_url)
    try:
        applied = asyncio.run(db.migrate(cfg.database_url))
    except OSError as e:
        raise click.ClickException(f"cannot reach the database: {e}") from None
    click.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@controller.command("create-key")
@CONFIG_OPTION
@click.option("--database-url", envvar="PROBEFLEET_DATABASE_URL", help="PostgreSQL DSN.")
@click.option("--name", default="admin", show_default=True)
@click.option(
    "--scope", "scopes", multiple=True, default=["admin"], show_default=True, type=click.Choice(SCOPES)
)
@click.option("--expires-days", type=click.IntRange(1, 3650))
def create_key(
    config_path: Path | None,
    database_url: str | None,
    name: str,
    scopes: tuple[str, ...],
    expires_days: int | None,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from probefleet.controller.storage import api_keys, db

    cfg = _load(config_path, database_url=database_url)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=expires_days) if expires_days else None

    async def run() -> str:
        await db.migrate(cfg.database_url)
        pool = await db.create_pool(cfg.database_url, max_size=1)
        try:
            key, _ = await api_keys.create(pool, name, list(scopes), expires)
            return key
        finally:
            await pool.close()

    try:
        key = asyncio.run(run())
    except OSError as e:
        raise click.ClickException(f"cannot reach the database: {e}") from None
    click.echo(key)
    print(f"scopes: {', '.join(scopes)}", file=sys.stderr)


@controller.command("create-user")
@CONFIG_OPTION
@click.option("--database-url", envvar="PROBEFLEET_DATABASE_URL", help="PostgreSQL DSN.")
@click.option("--username", required=True, help="The console login name.")
@click.option("--role", default="admin", show_default=True, type=click.Choice(ROLES))
@click.option(
    "--password-file",
    type=click.File("r"),
    help="Read the password from this file ('-' for stdin); default: asked for, or made up and printed once.",
)
def create_user(
    config_path: Path | None,
    database_url: str | None,
    username: str,
    role: str,
    password_file: TextIO | None,
) -> None:
    """Create a console user (the password is stored as an argon2id hash)."""
    import secrets

    from probefleet.controller.console import accounts
    from probefleet.controller.storage import db
    from probefleet.controller.validation import ValidationError

    cfg = _load(config_path, database_url=database_url)
    made_up = None
    if password_file is not None:
        password = password_file.read().rstrip("\r\n")
    elif sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = made_up = secrets.token_urlsafe(15)
    try:
        accounts.check_new_user(username, password, role)
    except ValidationError as e:
        raise click.UsageError("; ".join(f"{k}: {v}" for k, v in e.details.items())) from None

    async def run() -> None:
        await db.migrate(cfg.database_url)
        pool = await db.create_pool(cfg.database_url, max_size=1)
        try:
            await accounts.create_user(pool, username, password, role)
        finally:
            await pool.close()

    try:
        asyncio.run(run())
    except ValidationError as e:
        raise click.UsageError("; ".join(f"{k}: {v}" for k, v in e.details.items())) from None
    except OSError as e:
        raise click.ClickException(f"cannot reach the database: {e}") from None
    click.echo(f"created {role} {username}")
    if made_up is not None:
        click.echo(f"password: {made_up}")


@controller.command("init-fleet")
@click.option(
    "--dir",
    "trust_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The trust directory to make (or complete): keys, JWTs, CA and server certificate.",
)
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    help="A name (or address) probes reach NATS by; in the server certificate (repeatable).",
)
@click.option(
    "--resolver-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where nats-server keeps account JWTs (default: DIR/resolver).",
)
@click.option(
    "--leafnodes",
    "leafnode_listen",
    metavar="HOST:PORT",
    help="Also take leaf nodes of remote regions there, e.g. 0.0.0.0:7422 (TLS, `init-leaf`).",
)
@click.option(
    "--mutual-tls",
    is_flag=True,
    help="Clients must also show a certificate from the fleet's CA (`client-cert`); stays on once set.",
)
def init_fleet(
    trust_dir: Path,
    hostnames: tuple[str, ...],
    resolver_dir: Path | None,
    leafnode_listen: str | None,
    mutual_tls: bool,
) -> None:
    """Make the fleet's NATS trust (operator, accounts, controller credential, CA and server
    certificate) once; run again to re-use it, add a --hostname or renew the certificate.
    Prints what to put in nats-server's configuration and the controller's settings."""
    from probefleet.controller.cluster import trust

    trust_dir = trust_dir.resolve()
    try:
        trust.generate(
            trust_dir,
            hostnames=list(hostnames),
            resolver_dir=resolver_dir,
            leafnode_listen=leafnode_listen,
            mutual_tls=mutual_tls,
        )
    except (OSError, trust.TrustError) as e:
        raise click.ClickException(f"cannot make the fleet trust in {trust_dir}: {e}") from None
    host = hostnames[0] if hostnames else "localhost"
    click.echo(
        f"fleet trust in {trust_dir} (secret files are 0600: keep the directory on the controllers only)\n"
        f"\nnats-server: run it with this configuration, the listen address and JetStream as flags:\n"
        f"  nats-server -c {trust_dir / 'nats-server.conf'} -p 4222 -js -sd /var/lib/nats\n"
        "  or include it from your own file (an include path is relative to the including file):\n"
        "  include nats-server.conf   # this file copied beside yours\n"
        "  (on another host, copy nats-server.conf, server-cert.pem and server-key.pem to the same paths:"
        " it names them by these paths)\n"
        "\ncontroller settings:\n"
        f"  PROBEFLEET_FLEET_TRUST_DIR={trust_dir}\n"
        f"  PROBEFLEET_NATS_URL=tls://{host}:4222\n"
        f"  (its credential and CA default to {trust_dir / 'controller.creds'} and {trust_dir / 'ca.pem'})\n"
        f"\nprobes: enroll each one (`probefleet region enroll REGION`); they trust {trust_dir / 'ca.pem'}"
    )


@controller.command("client-cert")
@click.option(
    "--dir",
    "trust_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The fleet's trust.",
)
@click.option("--name", required=True, help="Who it is for, e.g. the probe's id (its certificate's name).")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write."
)
def client_cert(trust_dir: Path, name: str, out: Path) -> None:
    """A client certificate from the fleet's CA, for NATS with mutual TLS (`init-fleet
    --mutual-tls`): give it to a probe as nats_tls_cert and nats_tls_key."""
    from probefleet.controller.cluster import trust

    if not (trust_dir / "ca-key.pem").exists():
        raise click.ClickException(
            f"no fleet CA in {trust_dir}: run `probefleet controller init-fleet` first"
        )
    if not name or "/" in name or name.startswith("."):
        raise click.UsageError(f"--name {name!r}: a plain name (it names the files)")
    try:
        cert, key = trust.issue_client_cert(trust_dir, name, out)
    except OSError as e:
        raise click.ClickException(f"cannot write the certificate: {e}") from None
    click.echo(f"PROBEFLEET_NATS_TLS_CERT={cert}\nPROBEFLEET_NATS_TLS_KEY={key}   (0600)")


@controller.command("init-leaf")
@click.option(
    "--dir",
    "trust_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The fleet's trust.",
)
@click.option("--region", required=True, help="The region the leaf node serves (its name in logs).")
@click.option("--hub-url", required=True, help="The hub's leaf-node URL, e.g. tls://nats.example.com:7422.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write."
)
@click.option(
    "--files-at",
    type=click.Path(path_type=Path),
    default=Path("/etc/nats/fleet"),
    show_default=True,
    help="Where the folder will be on the leaf host.",
)
@click.option(
    "--resolver-dir",
    type=click.Path(path_type=Path),
    default=Path("/data/jwt"),
    show_default=True,
    help="Where the leaf's nats-server keeps account JWTs.",
)
def init_leaf(
    trust_dir: Path, region: str, hub_url: str, out: Path, files_at: Path, resolver_dir: Path
) -> None:
    """Write what a remote region's NATS leaf node needs (config, its credential, the
    fleet's CA and certificate) to --out, to copy to the leaf host. Probes of the region
    then connect to the leaf with their own credentials (docs/architecture/fleet.md)."""
    from probefleet.controller.cluster import trust

    if not hub_url.startswith("tls://"):
        raise click.UsageError("--hub-url: the hub's leaf port speaks TLS, use tls://HOST:PORT")
    try:
        fleet = trust.FleetTrust.load(trust_dir.resolve(), nats_urls=[hub_url])
        trust.write_leaf(
            fleet, out, name=region, hub_url=hub_url, files_at=files_at, resolver_dir=resolver_dir
        )
    except (OSError, trust.TrustError) as e:
        raise click.ClickException(f"cannot write the leaf node's files: {e}") from None
    click.echo(
        f"leaf node of {region} in {out} (secrets 0600): copy it to {files_at} on the leaf host and run\n"
        f"  nats-server -c {files_at / 'leaf.conf'} -p 4222\n"
        f"probes of {region}: enroll as usual, and run with --nats-url tls://<leaf host>:4222"
    )


@controller.command("check-config")
@CONFIG_OPTION
def check_config(config_path: Path | None) -> None:
    """Validate the controller's configuration (file plus PROBEFLEET_* variables) and print
    it, secrets redacted."""
    import msgspec

    from probefleet.shared.redact import redact_url

    cfg = _load(config_path)
    data = msgspec.to_builtins(cfg)
    data["database_url"] = redact_url(cfg.database_url)
    data["nats_url"] = redact_url(cfg.nats_url)
    for secret in ("status_page_secret", "smtp_password"):
        if data.get(secret):
            data[secret] = "<redacted>"
    click.echo(msgspec.json.format(msgspec.json.encode(data)).decode())
