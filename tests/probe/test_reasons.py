"""Every Reason is produced by at least one probe test (a new member needs a test)."""

from __future__ import annotations

from pathlib import Path

from probefleet.shared.wire import Reason


def test_it_has_a_test_producing_every_reason() -> None:
    sources = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    sources = sources.replace(Path(__file__).read_text(), "")
    missing = [r.name for r in Reason if f"Reason.{r.name}" not in sources and f'"{r.value}"' not in sources]
    assert missing == []
