"""controller.config.load: environment variables, their *_FILE forms, SMTP security."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.config import ConfigError, load
from shared.cli import main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PROBEFLEET_")]:
        monkeypatch.delenv(name)


def test_an_empty_variable_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "db").write_text("postgresql://pf:s3cret@db/pf\n")
    monkeypatch.setenv("PROBEFLEET_DATABASE_URL", "")
    monkeypatch.setenv("PROBEFLEET_DATABASE_URL_FILE", str(tmp_path / "db"))
    monkeypatch.setenv("PROBEFLEET_HOST", "")
    cfg = load()
    assert (cfg.database_url, cfg.host) == ("postgresql://pf:s3cret@db/pf", "127.0.0.1")


def test_a_set_variable_wins_over_its_file_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "db").write_text("postgresql://pf:s3cret@db/pf\n")
    monkeypatch.setenv("PROBEFLEET_DATABASE_URL", "postgresql://other/pf")
    monkeypatch.setenv("PROBEFLEET_DATABASE_URL_FILE", str(tmp_path / "db"))
    assert load().database_url == "postgresql://other/pf"


def test_check_config_names_the_variable_of_an_unreadable_file(tmp_path: Path) -> None:
    env = {"PROBEFLEET_DATABASE_URL_FILE": str(tmp_path / "missing")}
    result = CliRunner().invoke(main, ["check-config"], env=env)
    assert result.exit_code == 1
    assert "PROBEFLEET_DATABASE_URL_FILE=" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
def test_it_accepts_each_smtp_security_the_mail_notifier_speaks(tmp_path: Path, security: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'smtp_security = "{security}"\n')
    assert load(path).smtp_security == security


@pytest.mark.parametrize("security", ["ssl", "STARTTLS", "", 465], ids=["ssl", "upper", "empty", "int"])
def test_it_rejects_any_other_smtp_security(security: object) -> None:
    with pytest.raises(ConfigError, match=r"smtp_security .*: use one of none, starttls, tls"):
        load(smtp_security=security)


def test_check_config_fails_on_a_bad_smtp_security(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('smtp_host = "mail.example"\nsmtp_security = "ssl"\n')
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    assert result.exit_code == 1
    assert "smtp_security 'ssl': use one of none, starttls, tls" in result.output
    assert "Traceback" not in result.output
