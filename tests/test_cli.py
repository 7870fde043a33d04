"""The `probefleet` command: migrate, create-key and check-config, run for real (dev: test_devcmd.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
from click.testing import CliRunner

from probefleet.shared.cli import main
from probefleet.shared.devstack import free_port


def test_it_migrates_once_and_then_reports_up_to_date(database: str) -> None:
    runner = CliRunner()
    first = runner.invoke(main, ["controller", "migrate", "--database-url", database])
    assert first.exit_code == 0 and "0001_core" in first.output
    second = runner.invoke(main, ["controller", "migrate", "--database-url", database])
    assert second.exit_code == 0 and "up to date" in second.output


async def test_it_migrates_safely_from_two_hosts_at_once(database: str) -> None:
    from probefleet.controller.storage import db

    a, b = await asyncio.gather(db.migrate(database), db.migrate(database))
    assert sorted(a + b) == sorted(v for v, _ in db.migration_files())
    conn = await asyncpg.connect(database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(db.migration_files())
    finally:
        await conn.close()


def test_it_creates_a_key_that_authenticates(database: str) -> None:
    result = CliRunner().invoke(
        main,
        ["controller", "create-key", "--database-url", database, "--name", "ci", "--scope", "monitors:read"],
    )
    assert result.exit_code == 0
    key = result.stdout.strip().splitlines()[0]
    assert key.startswith("pf_")

    async def check() -> list[str]:
        from probefleet.controller.storage import api_keys

        conn = await asyncpg.connect(database)
        try:
            import datetime as dt

            row = await api_keys.authenticate(conn, key, dt.datetime.now(dt.UTC))
            stored = await conn.fetchval("SELECT hash FROM api_keys")
            assert key not in stored  # only the digest is kept
            return list(row["scopes"]) if row else []
        finally:
            await conn.close()

    assert asyncio.run(check()) == ["monitors:read"]


def test_it_rejects_bad_configuration_readably(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('port = "eighty"\n')
    result = CliRunner().invoke(main, ["check-config", "--config", str(bad)])
    assert result.exit_code != 0
    assert "invalid configuration" in result.output and "port" in result.output
    assert "Traceback" not in result.output


def test_it_rejects_a_config_file_that_is_not_a_table(tmp_path: Path) -> None:
    bad = tmp_path / "c.json"
    bad.write_text("[1]")
    for role in ("controller", "probe"):
        result = CliRunner().invoke(main, ["check-config", "--role", role, "--config", str(bad)])
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # not a crash
        assert "invalid configuration" in result.output and "must be a table of settings" in result.output


def test_it_redacts_secrets_in_check_config() -> None:
    env = {"PROBEFLEET_DATABASE_URL": "postgresql://pf:hunter2@db:5432/pf"}
    result = CliRunner().invoke(main, ["check-config"], env=env)
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "<redacted>" in result.output


def test_it_redacts_the_nats_credentials_of_either_role() -> None:
    for role, extra in (("controller", {}), ("probe", {"PROBEFLEET_REGION": "us-east"})):
        for url in ("nats://pf:s3cretpw@nats:4222", "nats://s3cretpw@nats:4222"):  # password; token
            env = {"PROBEFLEET_NATS_URL": url, **extra}
            result = CliRunner().invoke(main, ["check-config", "--role", role], env=env)
            assert result.exit_code == 0, result.output
            assert "s3cretpw" not in result.output and "@nats:4222" in result.output


def test_it_fails_readably_when_the_database_is_unreachable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    result = CliRunner().invoke(main, ["controller", "migrate", "--database-url", url])
    assert result.exit_code != 0 and "cannot reach the database" in result.output


def test_serve_refuses_an_unusable_fleet_trust_readably(tmp_path: Path) -> None:
    """The trust module is imported only for a controller given fleet_trust_dir; its error
    is still one readable line, not a traceback."""
    env = {
        "PROBEFLEET_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
        "PROBEFLEET_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "PROBEFLEET_FLEET_TRUST_DIR": str(tmp_path / "no-trust"),
    }
    result = CliRunner().invoke(main, ["controller", "serve", "--insecure-nats", "--port", "0"], env=env)
    assert result.exit_code == 1, result.output
    assert "fleet trust: no fleet trust directory at" in result.output


def test_it_reads_settings_from_the_environment_and_files(tmp_path: Path) -> None:
    from probefleet.controller.config import load

    secret = tmp_path / "db"
    secret.write_text("postgresql://pf:s3cret@db/pf\n")
    env = {
        "PROBEFLEET_PORT": "9090",
        "PROBEFLEET_HOST": "",
        "PROBEFLEET_DATABASE_URL_FILE": str(secret),
        "PROBEFLEET_REGIONS": "eu-west, moon-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        cfg = load()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert cfg.port == 9090 and cfg.host == "127.0.0.1"
    assert cfg.database_url == "postgresql://pf:s3cret@db/pf"
    assert [(r.id, r.city) for r in cfg.regions] == [("eu-west", "Dublin"), ("moon-1", "")]
