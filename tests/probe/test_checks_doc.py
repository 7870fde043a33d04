"""docs/checks.md's examples: every kind has one, each is a monitor the API and the config
file take, and each of the kinds run by hand from a spec file is taken by `probefleet probe
check --spec-file` as it stands (issue 23: documented with an example each)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from probefleet.controller.monitors import config as monitor_config
from probefleet.probe.cli import KIND_OPTIONS, build_spec, probe, spec_file_timeout
from probefleet.shared import cli_files, wire

DOC = Path(__file__).resolve().parents[2] / "docs" / "checks.md"


def _examples() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S):
        data = yaml.safe_load(block)
        if isinstance(data, dict):
            data = data.get("monitors", [data])
        found.extend(m for m in data if isinstance(m, dict) and "type" in m)
    return found


EXAMPLES = _examples()
BY_HAND = [m for m in EXAMPLES if KIND_OPTIONS.get(m["type"]) == ("spec_file",)]


def test_every_kind_has_an_example() -> None:
    kinds = {m["type"] for m in EXAMPLES}
    assert set(wire.PROBE_KINDS) - {"diagnose"} <= kinds, set(wire.PROBE_KINDS) - kinds


def _resolved(example: dict[str, Any]) -> dict[str, Any]:
    """The example with its `${env:NAME}` references as the config file would resolve them."""
    text = re.sub(r"\$\{env:\w+\}", "from-the-env", yaml.safe_dump(example))
    resolved: dict[str, Any] = yaml.safe_load(text)
    return resolved


@pytest.mark.parametrize("example", EXAMPLES, ids=[m["name"] for m in EXAMPLES])
def test_each_example_is_a_monitor_the_api_takes(example: dict[str, Any]) -> None:
    cfg = monitor_config.parse(_resolved(example), ["eu"])
    assert cfg.spec is not None and cfg.spec.__struct_config__.tag == example["type"]


@pytest.mark.parametrize("example", BY_HAND, ids=[m["name"] for m in BY_HAND])
def test_each_example_runs_by_hand_from_a_spec_file(
    example: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry as the docs show it, monitor settings and `${env:...}` included, gives the
    check the API would send to a probe."""
    for name in re.findall(r"\$\{env:(\w+)\}", yaml.safe_dump(example)):
        monkeypatch.setenv(name, "from-the-env")
    path = tmp_path / "check.yaml"
    path.write_text(yaml.safe_dump(example))
    options = {name: None for names in KIND_OPTIONS.values() for name in names} | {"spec_file": str(path)}
    assert build_spec(example["type"], options) == monitor_config.parse(_resolved(example), ["eu"]).spec


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("redis", "{host: h, expected_valu: PONG}", "not a field of a redis check: expected_valu"),
        ("redis", "{host: h, password: '${env:H11_UNSET_VARIABLE}'}", "H11_UNSET_VARIABLE is not set"),
        ("mysql", "{type: redis, host: h}", "holds a redis check, not mysql"),
        ("redis", "{url: 'redis://h:99999'}", "has no valid port"),
    ],
    ids=["misspelt", "unset-env", "other-kind", "bad-port"],
)
def test_a_spec_file_it_cannot_run_as_written_exits_2(
    kind: str, text: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "check.yaml"
    path.write_text(text)
    result = CliRunner().invoke(probe, ["check", "--kind", kind, "--spec-file", str(path)])
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_entry_s_timeout_is_the_budget_unless_given(tmp_path: Path) -> None:
    path = tmp_path / "check.yaml"
    path.write_text("{name: x, type: redis, url: 'redis://127.0.0.1:6379', timeout: 7}")
    assert spec_file_timeout(str(path)) == 7.0
    path.write_text("{host: 127.0.0.1, timeout: true}")
    assert spec_file_timeout(str(path)) is None


def test_the_examples_make_a_config_file_apply_reads(tmp_path: Path) -> None:
    """All of them in one file of the config file format: its schema takes each entry."""
    path = tmp_path / "monitors.yaml"
    path.write_text(yaml.safe_dump({"monitors": EXAMPLES}))
    loaded = cli_files.load([path])
    assert sorted(r.key for r in loaded.resources) == sorted(m["name"] for m in EXAMPLES)


def test_a_spec_file_s_url_is_read_as_host_and_port(tmp_path: Path) -> None:
    path = tmp_path / "check.yaml"
    path.write_text("{name: cache, type: redis, url: 'redis://cache.internal:6380', check_interval: 30}")
    options = {name: None for names in KIND_OPTIONS.values() for name in names} | {"spec_file": str(path)}
    assert build_spec("redis", options) == wire.RedisSpec(host="cache.internal", port=6380)
