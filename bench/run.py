"""`make bench`: run benchmarks by name (default: the end-to-end one).

python -m bench.run            # e2e
python -m bench.run e2e probe  # several
python -m bench.run all
"""

from __future__ import annotations

import importlib
import subprocess
import sys

BENCHES = {
    "e2e": "bench.e2e",
    "ingest": "bench.ingest",
    "probe": "bench.probe_throughput",
    "detection": "bench.detection_latency",
    "api": "bench.api_latency",
    "heartbeats": "bench.heartbeat_pings",
    "notifications": "bench.notifications",
    "stats": "bench.stats",
    "status": "bench.status_pages",
    "fleet": "bench.fleet",
}


def main(argv: list[str]) -> int:
    names = argv or ["e2e"]
    if names == ["all"]:
        names = [n for n, mod in BENCHES.items() if importlib.util.find_spec(mod) is not None]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}, all", file=sys.stderr
        )
        return 2
    for name in names:
        print(f"== {name}", flush=True)
        code = subprocess.call([sys.executable, "-m", BENCHES[name]])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
