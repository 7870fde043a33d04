"""Browser checks: memory per concurrent run and runs per minute, with the caps in place.

    .venv/bin/python -m bench.browser [--runs 20] [--concurrency 1,2,4] [--no-record]

Each run is the browser checker (`probe/checkers/browser.py`: Playwright and the host's
Chromium at nice 19, one renderer, the memory watchdog) on a 4-step journey against a
local aiohttp page (goto, fill, click, wait for text). For each concurrency: runs per
minute over `--runs` runs, and the peak memory (PSS) one run's browser reached, as the
checker's watchdog measured it. Results go to bench/RESULTS.md, section "Browser checks
(issue 23)".
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web

from bench.common import machine, percentile, record

PAGE = """<!doctype html><html><body><h1>Bench</h1><input id="q"><button id="go">Go</button>
<div id="out"></div><script>document.getElementById('go').onclick = () => {
document.getElementById('out').textContent = 'Found ' + document.getElementById('q').value; };</script>
</body></html>"""


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def _favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


async def _measure(base: str, runs: int, concurrency: int) -> dict[str, float]:
    from probefleet.probe.checkers import browser
    from probefleet.shared.wire import BrowserSpec, BrowserStep, Status

    spec = BrowserSpec(
        steps=[
            BrowserStep(action="goto", url=f"{base}/"),
            BrowserStep(action="fill", selector="#q", value="probe"),
            BrowserStep(action="click", selector="#go"),
            BrowserStep(action="wait_for_text", selector="#out", value="Found probe"),
        ]
    )
    peaks: list[float] = []
    failures = 0
    left = runs

    async def worker() -> None:
        nonlocal left, failures
        while left > 0:
            left -= 1
            out = await browser.check(spec, timeout=60.0, source_address=None)
            if out.status != Status.OK:
                failures += 1
            peak = out.details.get("peak_memory_mb")
            if isinstance(peak, int | float):
                peaks.append(float(peak))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "runs_per_min": runs / elapsed * 60,
        "peak_p50": percentile(peaks, 0.5),
        "peak_max": max(peaks) if peaks else float("nan"),
        "failures": failures,
    }


async def _main(runs: int, levels: list[int]) -> list[tuple[int, dict[str, float]]]:
    app = web.Application()
    app.router.add_get("/", _page)
    app.router.add_get("/favicon.ico", _favicon)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return [(c, await _measure(f"http://127.0.0.1:{port}", runs, c)) for c in levels]
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--concurrency", default="1,2,4")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",") if x]
    results = asyncio.run(_main(args.runs, levels))
    rows = "\n".join(
        f"| {c} | {r['runs_per_min']:.1f} | {r['peak_p50']:.0f} | {r['peak_max']:.0f} | {r['failures']:.0f} |"
        for c, r in results
    )
    command = f".venv/bin/python -m bench.browser --runs {args.runs} --concurrency {args.concurrency}"
    body = f"""Command: `{command}`
Machine: {machine()}.

A 4-step journey (goto, fill, click, wait for text) on a local page, each run its own
headless Chromium (Playwright, the host's Chromium, nice 19, one renderer, 768 MiB cap).
Memory is the peak PSS of one run's browser processes, as the checker's watchdog saw it.

| concurrent runs | runs per minute | peak MiB per run, p50 | peak MiB per run, max | failures |
|---|---|---|---|---|
{rows}
"""
    print(body)
    if not args.no_record:
        record("Browser checks (issue 23)", body)


if __name__ == "__main__":
    main()
