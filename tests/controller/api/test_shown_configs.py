"""monitors.ShownConfigs: a monitor's shown config is reused only while its stored config
columns are unchanged, at most max_entries are held, and it equals what config_fields and
redact build."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from probefleet.controller.api.monitors import ShownConfigs
from probefleet.controller.monitors import config


def _row(monitor_id: int = 1, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": monitor_id,
        "name": f"monitor {monitor_id}",
        "kind": "http",
        "spec": {"type": "http", "url": "https://u:pw@127.0.0.1/?token=t", "headers": {"X-Api-Key": "k"}},
        "interval_s": 60,
        "timeout_s": 5,
        "locations": ["us-east"],
        "consensus": "majority",
        "quorum": None,
        "retry_count": 0,
        "recovery_count": 1,
        "enabled": True,
        "tags": ["prod"],
        "parent_id": None,
        "incident_on_degraded": False,
        "notifications": [],
        "project": None,
        "escalation_policy_id": None,
        "status": "up",
    }
    row.update(changes)
    return row


class Odd:
    """A value JSON cannot hold."""


def _fresh(row: dict[str, Any]) -> dict[str, Any]:
    return config.redact(config.config_fields(copy.deepcopy(row)))


def _decoded(encoded: bytes) -> dict[str, Any]:
    return msgspec.json.decode(b"{" + encoded + b"}")  # type: ignore[no-any-return]


def test_an_unchanged_monitor_is_shown_from_its_entry_and_any_change_rebuilds_it() -> None:
    shown = ShownConfigs()
    row = _row()
    first = shown.get(row)
    assert _decoded(first) == _fresh(row)
    assert _decoded(first)["url"] == "https://u:<redacted>@127.0.0.1/?token=<redacted>"
    assert shown.get(_row()) is first  # equal columns, another row object: the same entry
    assert shown.get(_row(status="down")) is first  # state is not config
    nested = _row()
    nested["spec"]["headers"]["X-Trace"] = "t"
    changed = [
        nested,
        _row(name="renamed"),
        _row(tags=["prod", "shop"]),
        _row(enabled=False),
        _row(interval_s=30),
        _row(parent_id=7),
    ]
    for row in changed:
        got = shown.get(row)
        assert got is not first and _decoded(got) == _fresh(row)
        first = got
    without = _row()
    del without["incident_on_degraded"]  # a column a row may lack: not the same as False
    assert _decoded(shown.get(without)) == _fresh(without)


def test_it_holds_at_most_max_entries_and_refuses_values_json_cannot_hold() -> None:
    shown = ShownConfigs(max_entries=3)
    for i in range(1, 6):
        shown.get(_row(i))
    assert sorted(shown.entries) == [3, 4, 5]
    with pytest.raises(TypeError):  # as encoding any response holding it would
        shown.get(_row(9, project=Odd()))
    assert 9 not in shown.entries


def test_an_entry_is_found_by_version_only_for_the_version_and_database_it_was_read_with() -> None:
    """Lists read config_version (migration 0027) instead of the configured columns: an
    entry answers a version only after a row of that version, read by the same
    application (versions are numbers of its database), was checked against it."""

    class App:
        """Stands for an aiohttp application (held weakly)."""

    shown, app, other = ShownConfigs(max_entries=2), App(), App()
    assert shown.by_version(app, 1, 10) is None
    first = shown.get(_row(1, config_version=10), app)
    assert shown.by_version(app, 1, 10) is first
    assert shown.by_version(other, 1, 10) is None  # another database's monitor 1
    assert shown.by_version(app, 1, 11) is None  # edited since: the columns must be read
    assert shown.get(_row(1, config_version=11), app) is first  # a bump that changed nothing
    assert shown.by_version(app, 1, 11) is first and shown.by_version(app, 1, 10) is None
    renamed = shown.get(_row(1, name="renamed"))  # a row without a version (a get by id)
    assert shown.by_version(app, 1, 11) is None  # the entry no longer matches version 11
    assert _decoded(renamed)["name"] == "renamed"
    shown.get(_row(2, config_version=20), app)
    shown.get(_row(3, config_version=30), app)  # drops monitor 1's entry, and its version
    assert sorted(shown.versions) == [2, 3] and shown.by_version(app, 3, 30) is not None
