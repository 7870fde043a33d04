"""bench/kuma.py's own logic, without Kuma: how it counts heartbeats in a window, the jitter
it derives from them, and what it says when Kuma is not provided."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click
import pytest

from bench import kuma

T0 = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC, any fixed instant


def _heartbeats(path: Path, rows: list[tuple[int, float, int]]) -> Path:
    """A SQLite file with Kuma's heartbeat columns that the bench reads, times in its format."""
    db = path / "kuma.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TABLE heartbeat (id INTEGER PRIMARY KEY, monitor_id INTEGER, time DATETIME, status INTEGER)"
    )
    conn.executemany(
        "INSERT INTO heartbeat (monitor_id, time, status) VALUES (?, ?, ?)",
        [(m, kuma._stamp(t), s) for m, t, s in rows],
    )
    conn.commit()
    conn.close()
    return db


def test_stamp_is_kumas_format_and_round_trips() -> None:
    stamp = kuma._stamp(T0 + 0.25)
    assert stamp == "2026-11-30 00:53:20.250"  # as Kuma stores it: "2026-12-06 14:43:51.628"
    assert kuma._seconds(stamp) == pytest.approx(T0 + 0.25)


def test_beats_counts_the_window_half_open(tmp_path: Path) -> None:
    db = _heartbeats(
        tmp_path,
        [
            (1, T0 - 0.001, 1),  # before
            (1, T0, 1),  # first instant: in
            (2, T0 + 5, 0),  # in, down
            (1, T0 + 9.999, 1),  # in
            (2, T0 + 10, 1),  # the end instant: out
        ],
    )
    beats = kuma._beats(db, T0, T0 + 10)
    assert [(m, s) for m, _, s in beats] == [(1, 1), (1, 1), (2, 0)]


def test_gaps_only_between_beats_of_one_monitor(tmp_path: Path) -> None:
    db = _heartbeats(
        tmp_path, [(1, T0, 1), (1, T0 + 20.5, 1), (1, T0 + 40.5, 1), (2, T0 + 3, 1), (3, T0 + 4, 1)]
    )
    gaps = kuma._gaps(kuma._beats(db, T0, T0 + 60), interval=20)
    assert gaps == pytest.approx([0.5, 0.0])


def test_missing_kuma_says_how_to_provide_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(kuma.ENV, raising=False)
    with pytest.raises(click.UsageError) as unset:
        kuma.kuma_dir()
    assert kuma.ENV in unset.value.message and "npm ci --omit dev" in unset.value.message
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "server.js").write_text("")
    monkeypatch.setenv(kuma.ENV, str(tmp_path))
    with pytest.raises(click.UsageError) as incomplete:
        kuma.kuma_dir()
    assert "node_modules/socket.io-client" in incomplete.value.message
    assert "dist/index.html" in incomplete.value.message
    assert "server/server.js" not in incomplete.value.message.split("lacks", 1)[1].split(".\n", 1)[0]
