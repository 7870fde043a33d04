"""probe.config.load_probe_config: file, then environment (or *_FILE), then overrides."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from probefleet.probe.config import ProbeConfig, load_probe_config


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("PROBEFLEET_")]:
        monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "probe.toml"
    path.write_text(text)
    return path


def test_it_takes_the_region_from_the_file(tmp_path: Path) -> None:
    assert load_probe_config(_toml(tmp_path, 'region = "eu-west"\n')).region == "eu-west"


def test_it_takes_the_region_from_the_variable_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBEFLEET_REGION", "us-east")
    assert load_probe_config(_toml(tmp_path, 'region = "eu-west"\n')).region == "us-east"


def test_it_takes_the_region_from_a_file_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "region").write_text("ap-south\n")
    monkeypatch.setenv("PROBEFLEET_REGION_FILE", str(tmp_path / "region"))
    assert load_probe_config().region == "ap-south"


def test_an_override_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBEFLEET_REGION", "us-east")
    assert load_probe_config(region="eu-west").region == "eu-west"


def test_an_empty_variable_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "region").write_text("ap-south\n")
    (tmp_path / "nats").write_text("nats://user:pass@nats:4222\n")
    monkeypatch.setenv("PROBEFLEET_REGION", "")
    monkeypatch.setenv("PROBEFLEET_REGION_FILE", str(tmp_path / "region"))
    monkeypatch.setenv("PROBEFLEET_NATS_URL", "")
    monkeypatch.setenv("PROBEFLEET_NATS_URL_FILE", str(tmp_path / "nats"))
    monkeypatch.setenv("PROBEFLEET_CONCURRENCY", "")
    cfg = load_probe_config(_toml(tmp_path, "concurrency = 7\n"))
    assert (cfg.region, cfg.nats_url, cfg.concurrency) == ("ap-south", "nats://user:pass@nats:4222", 7)


def test_it_names_every_source_when_no_region_is_given() -> None:
    with pytest.raises(ValueError) as caught:
        load_probe_config()
    for source in ("`region`", "PROBEFLEET_REGION ", "PROBEFLEET_REGION_FILE", "--region"):
        assert source in str(caught.value)


def test_it_names_the_variable_of_an_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBEFLEET_REGION_FILE", str(tmp_path / "missing"))
    with pytest.raises(OSError, match=r"PROBEFLEET_REGION_FILE=.*missing: No such file"):
        load_probe_config()


def test_it_rejects_a_concurrency_that_is_not_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROBEFLEET_CONCURRENCY", "many")
    with pytest.raises(ValueError, match="concurrency"):
        load_probe_config(region="eu-west")
    monkeypatch.setenv("PROBEFLEET_CONCURRENCY", "500")
    assert load_probe_config(region="eu-west").concurrency == 500


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("PROBEFLEET_RESULT_LINGER", "-0.1", "result_linger must be between 0 and 1 second"),
        ("PROBEFLEET_RESULT_LINGER", "5", "result_linger must be between 0 and 1 second"),
        ("PROBEFLEET_RESULT_BATCH_MAX", "0", "result_batch_max must be at least 1"),
    ],
    ids=["negative-linger", "linger-past-a-second", "no-result-per-batch"],
)
def test_it_rejects_result_batching_out_of_bounds(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=problem):
        load_probe_config(region="eu-west")


def test_it_takes_result_batching_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (load_probe_config(region="eu-west").result_linger, ProbeConfig().result_batch_max) == (0.05, 200)
    monkeypatch.setenv("PROBEFLEET_RESULT_LINGER", "0.2")
    monkeypatch.setenv("PROBEFLEET_RESULT_BATCH_MAX", "1")
    cfg = load_probe_config(region="eu-west")
    assert (cfg.result_linger, cfg.result_batch_max) == (0.2, 1)
