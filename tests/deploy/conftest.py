from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "probefleet"
DEPLOY = REPO / "deploy"
