"""The monitor page's response-time chart: p50 and p95 per region over 1 h, 24 h, 7 d or
30 d, from the rollups where they exist and the raw results for the rest (the same pieces
the statistics endpoints read), as columns uPlot draws directly.

Percentiles come from the rollups' histograms (storage/stats.py: within 2 % of the exact
nearest-rank value), summed per bin and region, so a 30-day chart reads at most 30 days of
hourly rows per region, never the raw results.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from probefleet.controller.storage import DB, stats
from probefleet.controller.storage import console as store

# range -> (span, bin width, coarsest rollup level read)
RANGES: dict[str, tuple[dt.timedelta, dt.timedelta, str]] = {
    "1h": (dt.timedelta(hours=1), dt.timedelta(minutes=1), "minute"),
    "24h": (dt.timedelta(hours=24), dt.timedelta(minutes=15), "minute"),
    "7d": (dt.timedelta(days=7), dt.timedelta(hours=2), "hour"),
    "30d": (dt.timedelta(days=30), dt.timedelta(hours=6), "hour"),
}


async def response_times(pool: DB, monitor_id: int, rng: str, now: dt.datetime) -> dict[str, Any]:
    """{"t": [unix seconds...], "series": [{"region", "q": "p50"|"p95", "values": [ms|None]}]}."""
    span, step, coarsest = RANGES[rng]
    end = stats.ceil_to(now, step)
    start = end - span
    marks = await stats.watermarks(pool)
    hists: dict[tuple[dt.datetime, str], dict[int, int]] = {}
    for level, a, b in stats.pieces(start, end, marks, coarsest):
        for row in await store.response_histograms(pool, monitor_id, level, a, b, start, step):
            hist = hists.setdefault((row["t"], row["region"]), {})
            if level == "raw":
                i = stats.bucket(row["duration_ms"])
                hist[i] = hist.get(i, 0) + 1
            else:
                for i, c in zip(row["hist_idx"], row["hist_cnt"], strict=True):
                    hist[i] = hist.get(i, 0) + c
    bins = [start + k * step for k in range(int(span / step))]
    regions = sorted({region for _, region in hists})
    series = []
    for region in regions:
        p50s: list[float | None] = []
        p95s: list[float | None] = []
        for t in bins:
            p50, p95 = stats.percentiles(hists.get((t, region), {}), (0.5, 0.95))
            p50s.append(p50)
            p95s.append(p95)
        series += [
            {"region": region, "q": "p50", "values": p50s},
            {"region": region, "q": "p95", "values": p95s},
        ]
    return {"range": rng, "t": [int(t.timestamp()) for t in bins], "series": series}
