"""Metric names cross a process boundary (dashboards, alerts): a golden file guards them.

Regenerate with PROBEFLEET_REGEN_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

from probefleet.controller import metrics
from probefleet.probe.metrics import ProbeMetrics

GOLDEN = Path(__file__).parent / "testdata" / "metrics.txt"


def current() -> str:
    lines = set()
    for role, registry in (("controller", metrics.REGISTRY), ("probe", ProbeMetrics().registry)):
        # A labelled metric with no children yet has no samples: read its label names.
        for collector in set(registry._names_to_collectors.values()):
            labels = ",".join(getattr(collector, "_labelnames", ()))
            for family in collector.collect():
                suffix = "_total" if family.type == "counter" else ""
                lines.add(f"{role} {family.type} {family.name}{suffix} {labels}".rstrip())
    return "\n".join(sorted(lines)) + "\n"


def test_metric_names_match_the_golden_file() -> None:
    if os.environ.get("PROBEFLEET_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(current())
    assert current() == GOLDEN.read_text()


def test_metric_names_follow_the_convention() -> None:
    for line in current().splitlines():
        _, kind, name, *_ = line.split(" ")
        assert name.startswith("probefleet_"), name
        if kind == "counter":
            assert name.endswith("_total"), name
