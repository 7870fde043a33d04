"""Loopback targets for checker tests: an aiohttp app, TLS servers from a trustme CA."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme
from aiohttp import web

from probefleet.probe.checkers import base, dns, http

ServeTls = Callable[..., Awaitable[int]]
RecordPeers = Callable[[int], Awaitable[tuple[int, list[str]]]]


async def _index(request: web.Request) -> web.Response:
    return web.Response(text="hello world, all systems operational")


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.match_info["code"]), text="status")


async def _redirect(request: web.Request) -> web.Response:
    n = int(request.match_info["n"])
    if n == 0:
        return web.Response(text="landed")
    raise web.HTTPFound(f"/redirect/{n - 1}")


async def _hop(request: web.Request) -> web.Response:
    """Waits `s` seconds, then redirects to `to`: one slow link of a redirect chain."""
    await asyncio.sleep(float(request.query.get("s", "0")))
    raise web.HTTPFound(request.query["to"])


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("s", "1")))
    return web.Response(text="slow")


async def _json(request: web.Request) -> web.Response:
    doc = {"ok": True, "data": {"count": 3, "items": [{"name": "a"}, {"name": "b"}]}}
    return web.json_response(doc)


async def _graphql(request: web.Request) -> web.Response:
    payload = await request.json()
    if "broken" in payload["query"]:
        return web.json_response({"data": None, "errors": [{"message": "field broken"}]})
    return web.json_response({"data": {"who": payload["variables"].get("name", "?")}})


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "authorization": request.headers.get("Authorization"),
            "content_type": request.headers.get("Content-Type"),
            "x_probe": request.headers.get("X-Probe"),
            "body": body.decode(),
            "peer": request.remote,
        }
    )


def target_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _index)
    app.router.add_get("/status/{code}", _status)
    app.router.add_get("/redirect/{n}", _redirect)
    app.router.add_get("/hop", _hop)
    app.router.add_get("/slow", _slow)
    app.router.add_get("/json", _json)
    app.router.add_post("/graphql", _graphql)
    app.router.add_route("*", "/echo", _echo)
    return app


async def start_app(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


@pytest.fixture(scope="session", autouse=True)
async def _close_shared_clients() -> AsyncIterator[None]:
    yield
    await http.close_sessions()
    await dns.close_resolvers()


@pytest.fixture(scope="session")
async def http_target() -> AsyncIterator[str]:
    runner, port = await start_app(target_app())
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA(organization_name="Probefleet Test CA")


@pytest.fixture(scope="session")
def ca_pem(ca: trustme.CA) -> str:
    return ca.cert_pem.bytes().decode()


def leaf(ca: trustme.CA, *, days: float = 365, host: str = "127.0.0.1") -> trustme.LeafCert:
    now = dt.datetime.now(dt.UTC)
    return ca.issue_cert(
        host, not_before=now - dt.timedelta(days=400), not_after=now + dt.timedelta(days=days)
    )


@pytest.fixture
async def serve_tls() -> AsyncIterator[ServeTls]:
    """Start an HTTPS target presenting a given certificate; returns its port."""
    runners: list[web.AppRunner] = []

    async def serve(cert: trustme.LeafCert, max_version: ssl.TLSVersion | None = None) -> int:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(ctx)
        if max_version is not None:
            ctx.maximum_version = max_version
        runner, port = await start_app(target_app(), ctx)
        runners.append(runner)
        return port

    yield serve
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def record_peers() -> AsyncIterator[RecordPeers]:
    """`await record_peers(port)`: a TCP relay on loopback in front of the server on `port`
    that notes each client's address as a server sees it, for the kinds whose test server
    cannot tell (TLS, SSH, SMTP, MQTT); returns the relay's port and the addresses."""
    servers: list[asyncio.Server] = []
    relays: set[asyncio.Task[None]] = set()

    async def start(port: int) -> tuple[int, list[str]]:
        peers: list[str] = []

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            relays.add(task)  # type: ignore[arg-type]
            peers.append(writer.get_extra_info("peername")[0])
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.gather(base.pipe(reader, upstream_writer), base.pipe(upstream_reader, writer))

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1]), peers

    yield start
    for server in servers:
        server.close()
    for task in relays:
        task.cancel()
    await asyncio.gather(*relays, return_exceptions=True)
