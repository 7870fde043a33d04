"""controller.config.load: environment variables, their *_FILE forms, SMTP security."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from probefleet.controller.config import ConfigError, load
from probefleet.shared.cli import main


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


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("YES", True), ("1", True), ("false", False), ("No", False), ("0", False)],
    ids=["true", "YES", "1", "false", "No", "0"],
)
def test_it_reads_the_allow_private_variables_as_booleans(
    value: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBEFLEET_NOTIFICATION_CHANNELS_ALLOW_PRIVATE", value)
    monkeypatch.setenv("PROBEFLEET_SUBSCRIBER_WEBHOOKS_ALLOW_PRIVATE", value)
    cfg = load()
    assert cfg.notification_channels_allow_private is cfg.subscriber_webhooks_allow_private is expected


def test_a_variable_beats_the_file_for_the_allow_private_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text("notification_channels_allow_private = true\nsubscriber_webhooks_allow_private = true\n")
    assert load(path).notification_channels_allow_private
    monkeypatch.setenv("PROBEFLEET_NOTIFICATION_CHANNELS_ALLOW_PRIVATE", "false")
    cfg = load(path)
    assert (cfg.notification_channels_allow_private, cfg.subscriber_webhooks_allow_private) == (False, True)


@pytest.mark.parametrize("name", ["NOTIFICATION_CHANNELS_ALLOW_PRIVATE", "SUBSCRIBER_WEBHOOKS_ALLOW_PRIVATE"])
def test_it_rejects_a_boolean_variable_it_cannot_read_naming_it(name: str) -> None:
    result = CliRunner().invoke(main, ["check-config"], env={f"PROBEFLEET_{name}": "on"})
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"PROBEFLEET_{name}='on': use true or false" in result.output


def test_it_reads_smtp_security_from_the_environment_and_checks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBEFLEET_SMTP_SECURITY", "none")
    assert load().smtp_security == "none"
    monkeypatch.setenv("PROBEFLEET_SMTP_SECURITY", "ssl")
    with pytest.raises(ConfigError, match=r"smtp_security 'ssl': use one of none, starttls, tls"):
        load()


def test_it_reads_the_stream_replicas_from_the_environment_and_checks_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load().nats_stream_replicas == 1
    monkeypatch.setenv("PROBEFLEET_NATS_STREAM_REPLICAS", "3")
    assert load().nats_stream_replicas == 3
    monkeypatch.setenv("PROBEFLEET_NATS_STREAM_REPLICAS", "7")
    with pytest.raises(ConfigError, match=r"nats_stream_replicas 7: use 1 to 5"):
        load()


def test_it_refuses_a_state_metrics_interval_that_is_not_positive() -> None:
    with pytest.raises(ConfigError, match=r"state_metrics_interval must be positive"):
        load(state_metrics_interval=0)
    assert load(state_metrics_interval=2.5).state_metrics_interval == 2.5


def test_diagnostics_per_region_minute_is_0_or_more() -> None:
    assert load().diagnostics_per_region_minute == 10
    assert load(diagnostics_per_region_minute=0).diagnostics_per_region_minute == 0
    with pytest.raises(ConfigError, match=r"diagnostics_per_region_minute must be 0 \(off\) or more"):
        load(diagnostics_per_region_minute=-1)


def test_it_checks_the_dispatch_lookahead() -> None:
    assert load().dispatch_lookahead == 1.0
    assert load(dispatch_lookahead=0).dispatch_lookahead == 0
    with pytest.raises(ConfigError, match=r"dispatch_lookahead -1.0: use 0 to 10 seconds"):
        load(dispatch_lookahead=-1.0)


def test_it_checks_the_results_ack_wait() -> None:
    assert load().results_ack_wait == 30.0
    assert load(results_ack_wait=5).results_ack_wait == 5.0
    with pytest.raises(ConfigError, match=r"results_ack_wait 0.5: use 1 to 3600 seconds"):
        load(results_ack_wait=0.5)
