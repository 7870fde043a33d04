"""Metric names cross a process boundary (dashboards, alerts): a golden file guards them.

Regenerate with PROBEFLEET_REGEN_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

from probefleet.controller import metrics
from probefleet.probe.metrics import FAMILIES, FLEET_WIDE, MONITOR_LABELS, ProbeMetrics

GOLDEN = Path(__file__).parent / "testdata" / "metrics.txt"


# prometheus_client's own process_*, python_info and python_gc_* are named by the library.
LIBRARY = {PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR}


def current() -> str:
    lines = set()
    for role, registry in (("controller", metrics.REGISTRY), ("probe", ProbeMetrics().registry)):
        # A labelled metric with no children yet has no samples: read its label names.
        for collector in set(registry._names_to_collectors.values()) - LIBRARY:
            labels = ",".join(getattr(collector, "_labelnames", ()))
            for family in collector.collect():
                suffix = "_total" if family.type == "counter" else ""
                lines.add(f"{role} {family.type} {family.name}{suffix} {labels}".rstrip())
    # The per-monitor series are rendered beside the probe's registry.
    for name, (kind, extra, _) in FAMILIES.items():
        labels = "" if name in FLEET_WIDE else ",".join((*MONITOR_LABELS, *extra))
        suffix = "_total" if kind == "counter" else ""
        lines.add(f"probe {kind} {name}{suffix} {labels}".rstrip())
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


def test_docs_list_every_metric() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "metrics.md").read_text()
    missing = [line.split(" ")[2] for line in current().splitlines() if f"`{line.split(' ')[2]}`" not in doc]
    assert not missing, f"docs/metrics.md does not list {missing}"
