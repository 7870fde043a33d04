"""A keep-alive HTTP target for benchmarks, run as its own process so its CPU is not counted."""

from __future__ import annotations

import sys

from aiohttp import web


async def ok(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
