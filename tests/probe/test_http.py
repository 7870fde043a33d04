from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
from urllib.parse import urlencode

import pytest

from probefleet.probe.checkers import http, http1
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.evidence import EVIDENCE_BODY, TEXT_UP_TO, unpack_body
from probefleet.shared.wire import Assertion, HttpSpec, Reason, Status

from .conftest import ServeTls, leaf, start_app, target_app


async def run(spec: HttpSpec, budget: float = 2.0, source: str | None = None) -> Outcome:
    return await http.check(spec, timeout=budget, source_address=source)


async def test_it_passes_and_reports_timings_and_size(http_target: str) -> None:
    out = await run(HttpSpec(url=f"{http_target}/"))
    assert out.status == Status.OK, out
    assert out.status_code == 200
    assert out.details["size"] == len("hello world, all systems operational")
    assert {"connect", "first_byte", "total"} <= out.timings.keys()
    assert out.timings["first_byte"] <= out.timings["total"]


@pytest.mark.parametrize(
    ("path", "expected", "status"),
    [
        ("/status/503", ["2xx"], Status.FAIL),
        ("/status/503", ["5xx"], Status.OK),
        ("/status/404", [404, 410], Status.OK),
        ("/status/204", [200], Status.FAIL),
    ],
    ids=["class-miss", "class-hit", "list-hit", "list-miss"],
)
async def test_it_matches_expected_status(
    http_target: str, path: str, expected: list[int | str], status: Status
) -> None:
    out = await run(HttpSpec(url=http_target + path, expected_status=expected))
    assert out.status == status
    if status == Status.FAIL:
        assert out.reason == Reason.STATUS_MISMATCH


async def test_it_follows_redirects_up_to_the_maximum(http_target: str) -> None:
    ok = await run(HttpSpec(url=f"{http_target}/redirect/3", max_redirects=3))
    assert ok.status == Status.OK and ok.details["redirects"] == 3
    too_many = await run(HttpSpec(url=f"{http_target}/redirect/4", max_redirects=3))
    assert too_many.reason == Reason.TOO_MANY_REDIRECTS
    unfollowed = await run(
        HttpSpec(url=f"{http_target}/redirect/2", follow_redirects=False, expected_status=[302])
    )
    assert unfollowed.status == Status.OK and unfollowed.status_code == 302


async def test_redirect_timings_cover_the_whole_chain(ca: object, ca_pem: str, serve_tls: ServeTls) -> None:
    """http (waits 0.2 s, redirects) -> https on another port (waits 0.3 s, answers): each
    phase counts once per request and never overlaps the waits the servers introduced."""
    first_wait, final_wait = 0.2, 0.3
    final = f"https://127.0.0.1:{await serve_tls(leaf(ca))}/slow?s={final_wait}"  # type: ignore[arg-type]
    runner, port = await start_app(target_app())
    try:
        url = f"http://127.0.0.1:{port}/hop?{urlencode({'s': first_wait, 'to': final})}"
        out = await run(HttpSpec(url=url, ca_pem=ca_pem))
    finally:
        await runner.cleanup()
    assert out.status == Status.OK, out.message
    assert out.details["redirects"] == 1 and out.details["final_url"] == final
    assert out.details["tls_version"]  # the certificate of the final, https request
    t = out.timings
    assert {"connect", "tls", "redirect", "first_byte", "total"} <= t.keys()
    assert t["total"] >= t["first_byte"] >= t["redirect"] + final_wait * 1000
    assert t["redirect"] >= first_wait * 1000
    # Two connections and one handshake, none overlapping the waits for the responses.
    phases = [t[k] for k in ("dns", "connect", "tls") if k in t]
    assert min(phases) >= 0 and sum(phases) + (first_wait + final_wait) * 1000 <= t["first_byte"]


def test_redirect_timings_sum_each_phase_over_the_requests() -> None:
    hops = [
        {"dns_start": 10.0, "dns_end": 10.002, "conn_start": 10.002, "conn_end": 10.005, "first_byte": 10.2},
        {"conn_start": 10.201, "tls_start": 10.204, "conn_end": 10.21, "first_byte": 10.3},  # TLS
        {"first_byte": 11.0},  # a reused connection: no phases of its own
    ]
    assert http._timings(hops, 10.0, 1100.0) == pytest.approx(
        {"dns": 2.0, "connect": 6.0, "tls": 6.0, "redirect": 300.0, "first_byte": 1000.0, "total": 1100.0}
    )


async def test_phases_are_timed_where_they_happen(http_target: str) -> None:
    """A name lookup and a connect on a new connection; a check that reuses it from the
    keep-alive pool has neither, and a redirect chain on it only its answers' times."""
    url = http_target.replace("127.0.0.1", "localhost")  # a name no earlier check looked up
    first = await run(HttpSpec(url=f"{url}/"))
    again = await run(HttpSpec(url=f"{url}/"))
    # A redirect moves its URL from the plain path (http1) to the session, so the second
    # check of the chain is the one on a reused connection.
    chain = [await run(HttpSpec(url=f"{url}/redirect/2")) for _ in "ab"][1]
    assert {"dns", "connect", "first_byte", "total"} <= first.timings.keys(), first.timings
    assert again.status == Status.OK and again.timings.keys() == {"first_byte", "total"}, again.timings
    assert chain.details["redirects"] == 2
    assert chain.timings.keys() == {"redirect", "first_byte", "total"}, chain.timings
    assert 0 < chain.timings["redirect"] <= chain.timings["first_byte"] <= chain.timings["total"]


async def test_a_reused_tls_connection_keeps_its_certificate_details(
    ca: object, ca_pem: str, serve_tls: ServeTls
) -> None:
    port = await serve_tls(leaf(ca, days=30))  # type: ignore[arg-type]
    first, again = [await run(HttpSpec(url=f"https://127.0.0.1:{port}/", ca_pem=ca_pem)) for _ in "ab"]
    assert {"connect", "tls"} <= first.timings.keys() and "tls" not in again.timings
    assert again.details["cert_days_left"] == first.details["cert_days_left"]
    assert again.details["tls_version"] == first.details["tls_version"]


async def test_it_times_out_on_a_slow_response(http_target: str) -> None:
    out = await run(HttpSpec(url=f"{http_target}/slow?s=2"), budget=0.3)
    assert out.reason == Reason.TIMEOUT
    assert 250 < out.timings["total"] < 1500
    # The connection left waiting is not reused: the next check gets its own answer.
    after = await run(HttpSpec(url=f"{http_target}/slow?s=0", expected_content="slow"))
    assert after.status == Status.OK, after


async def _serve_each(replies: list[bytes], close_after: bool) -> tuple[asyncio.Server, list[int]]:
    """A raw server sending `replies[i]` to the i-th request (the last one after that);
    closing each connection after its answer when `close_after`. Counts connections."""
    connections = [0]
    served = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(replies[min(served[0], len(replies) - 1)])
                served[0] += 1
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), connections


@pytest.mark.parametrize(
    ("reply", "close_after", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nfirst", True, "first"),
        (b"HTTP/1.0 200 OK\r\n\r\nto the end", True, "to the end"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nquiet", True, "quiet"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
            + f"{len(gzip.compress(b'zipped chunks')):x}".encode()
            + b"\r\n"
            + gzip.compress(b"zipped chunks")
            + b"\r\n0\r\n\r\n",
            False,
            "zipped chunks",
        ),
    ],
    ids=["connection-close", "http10-to-eof", "closed-silently", "chunked-gzip"],
)
async def test_plain_checks_read_every_framing_and_survive_closed_connections(
    reply: bytes, close_after: bool, body: str
) -> None:
    """The plain path (http1) on connections the server closes, says it closes, or keeps:
    every check gets the whole body, a closed connection is never reused for a request."""
    server, connections = await _serve_each([reply], close_after)
    port = server.sockets[0].getsockname()[1]
    try:
        outs = [await run(HttpSpec(url=f"http://127.0.0.1:{port}/", expected_content=body)) for _ in "abc"]
    finally:
        server.close()
    assert [o.status for o in outs] == [Status.OK] * 3, outs
    assert {o.details["size"] for o in outs} == {len(body)}
    assert connections[0] == (3 if close_after else 1)


async def test_a_pooled_connection_closed_as_the_request_goes_out_is_retried_once() -> None:
    """The server answers one request per connection and closes the next one unanswered
    (a keep-alive timeout racing the request): the check is sent again on a new connection."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        outs = [await run(HttpSpec(url=f"http://127.0.0.1:{port}/")) for _ in "ab"]
    finally:
        server.close()
    assert [o.status for o in outs] == [Status.OK, Status.OK], outs
    assert len(connections) == 2 and "connect" in outs[1].timings


async def test_a_plain_check_goes_its_own_path_and_a_redirect_moves_it_to_the_session(
    http_target: str,
) -> None:
    """A GET with nothing of its own goes the plain path; with a header of its own, through
    the session; a URL answering a redirect is followed by the session, then and after."""
    port = int(http_target.rsplit(":", 1)[1])
    before = sum(len(q) for k, q in http1._pools.items() if k[3] == port)
    assert (await run(HttpSpec(url=f"{http_target}/status/200"))).status == Status.OK
    assert sum(len(q) for k, q in http1._pools.items() if k[3] == port) >= max(1, before)
    spec = HttpSpec(url=f"{http_target}/status/200", headers={"X-Probe": "yes"})
    assert not http1.takes(spec, http._url(spec.url), "GET")
    url = f"{http_target}/redirect/1?plain"
    assert http1.takes(HttpSpec(url=url), http._url(url), "GET")
    out = await run(HttpSpec(url=url, expected_content="landed"))
    assert out.status == Status.OK and out.details["redirects"] == 1, out
    assert not http1.takes(HttpSpec(url=url), http._url(url), "GET")


async def test_it_reports_degraded_over_the_threshold(http_target: str) -> None:
    out = await run(HttpSpec(url=f"{http_target}/slow?s=0.2", degraded_ms=100))
    assert (out.status, out.reason) == (Status.DEGRADED, Reason.SLOW_RESPONSE)
    fast = await run(HttpSpec(url=f"{http_target}/", degraded_ms=1000))
    assert fast.status == Status.OK


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"expected_content": "operational"}, None),
        ({"expected_content": "maintenance"}, Reason.KEYWORD_MISSING),
        ({"expected_content": r"all \w+ operational", "content_regex": True}, None),
        ({"excluded_content": "error"}, None),
        ({"excluded_content": "hello"}, Reason.KEYWORD_PRESENT),
        ({"excluded_content": r"sys.ems", "content_regex": True}, Reason.KEYWORD_PRESENT),
    ],
    ids=["plain-hit", "plain-miss", "regex-hit", "excluded-absent", "excluded-present", "regex"],
)
async def test_it_checks_keywords(http_target: str, fields: dict[str, object], reason: Reason | None) -> None:
    out = await run(HttpSpec(url=f"{http_target}/", **fields))  # type: ignore[arg-type]
    assert out.reason == reason


@pytest.mark.parametrize(
    ("assertion", "holds"),
    [
        (Assertion(path="$.ok", op="equals", value=True), True),
        (Assertion(path="data.count", op="equals", value=4), False),
        (Assertion(path="data.count", op="not_equals", value=4), True),
        (Assertion(path="data.count", op="gt", value=2), True),
        (Assertion(path="data.count", op="lt", value=2), False),
        (Assertion(path="data.count", op="gte", value=3), True),
        (Assertion(path="data.count", op="lte", value=2.5), False),
        (Assertion(path="data.items[1].name", op="equals", value="b"), True),
        (Assertion(path="data.items[5].name", op="exists"), False),
        (Assertion(path="data.items", op="exists"), True),
        (Assertion(path="data.items[0].name", op="contains", value="a"), True),
        (Assertion(path="data", op="contains", value="missing"), False),
    ],
    ids=lambda v: str(v) if isinstance(v, bool) else f"{v.path}-{v.op}",
)
async def test_it_asserts_json_paths(http_target: str, assertion: Assertion, holds: bool) -> None:
    out = await run(HttpSpec(url=f"{http_target}/json", json_assertions=[assertion]))
    assert out.reason == (None if holds else Reason.JSON_MISMATCH), out.message


async def test_it_fails_json_assertions_on_a_non_json_body(http_target: str) -> None:
    spec = HttpSpec(url=f"{http_target}/", json_assertions=[Assertion(path="a", op="exists")])
    assert (await run(spec)).reason == Reason.JSON_MISMATCH


async def test_it_fails_graphql_with_errors(http_target: str) -> None:
    good = HttpSpec(
        url=f"{http_target}/graphql",
        graphql_query="query($name: String) { who(name: $name) }",
        graphql_variables={"name": "ada"},
        json_assertions=[Assertion(path="data.who", value="ada")],
    )
    assert (await run(good)).status == Status.OK
    bad = HttpSpec(url=f"{http_target}/graphql", graphql_query="{ broken }")
    out = await run(bad)
    assert out.reason == Reason.GRAPHQL_ERROR and "field broken" in out.message


@pytest.mark.parametrize(
    ("fields", "seen"),
    [
        (
            {"method": "PUT", "body": '{"a": 1}', "body_kind": "json"},
            {"method": "PUT", "content_type": "application/json", "body": '{"a": 1}'},
        ),
        (
            {"method": "POST", "body": '{"a": "1", "b": "x y"}', "body_kind": "form"},
            {"content_type": "application/x-www-form-urlencoded", "body": "a=1&b=x+y"},
        ),
        ({"method": "POST", "body": "raw text"}, {"body": "raw text"}),
        ({"basic_auth": ("ada", "s3cret")}, {"authorization": "Basic YWRhOnMzY3JldA=="}),
        ({"bearer_token": "tok"}, {"authorization": "Bearer tok"}),
        (
            {"headers": {"X-Probe": "yes"}, "method": "delete"},
            {"x_probe": "yes", "method": "DELETE"},
        ),
    ],
    ids=["json", "form", "raw", "basic", "bearer", "headers"],
)
async def test_it_sends_method_headers_body_and_auth(
    http_target: str, fields: dict[str, object], seen: dict[str, str]
) -> None:
    spec = HttpSpec(url=f"{http_target}/echo", expected_content="method", **fields)  # type: ignore[arg-type]
    out = await run(spec)
    assert out.status == Status.OK
    echo = await _echo(spec)
    assert {k: echo[k] for k in seen} == seen


async def _echo(spec: HttpSpec) -> dict[str, object]:
    session = http.session_for(None, True, None)
    async with session.request(spec.method, spec.url, **http._request_kwargs(spec)) as resp:
        return dict(json.loads(await resp.text()))


async def test_it_sends_exactly_one_host_header_the_configured_one() -> None:
    """A configured Host (a virtual host behind an address) replaces the URL's host; the
    controller refuses two spellings of it, so one Host header goes out."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        out = await run(HttpSpec(url=f"http://127.0.0.1:{port}/", headers={"Host": "vhost.test"}))
        assert out.status == Status.OK, out
    finally:
        server.close()
        await server.wait_closed()
    hosts = [line for line in heads[0].split(b"\r\n") if line.lower().startswith(b"host:")]
    assert hosts == [b"Host: vhost.test"]


async def test_its_results_carry_no_secret_of_the_url() -> None:
    """aiohttp quotes the request URL in some errors; a result is shown to read-only keys."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 302 Found\r\nLocation: /next?sid=S2\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://u:pw-S0@127.0.0.1:{server.sockets[0].getsockname()[1]}/x?token=T1&sid=S1&page=1"
    try:
        out = await run(HttpSpec(url=url, max_redirects=1, secret_params=["sid"]))
    finally:
        server.close()
        await server.wait_closed()
    assert out.reason == Reason.TOO_MANY_REDIRECTS and "token=<redacted>&sid=<redacted>&page=1" in out.message
    assert not [s for s in ("pw-S0", "T1", "S1", "S2") if s in str(out)], out


async def test_it_binds_the_source_address(http_target: str) -> None:
    spec = HttpSpec(url=f"{http_target}/echo", expected_content='"peer": "127.0.0.12"')
    out = await run(spec, source="127.0.0.12")
    assert out.status == Status.OK, out.message
    other = await run(spec, source="127.0.0.11")
    assert other.reason == Reason.KEYWORD_MISSING


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_it_maps_connection_errors() -> None:
    refused = await run(HttpSpec(url=f"http://127.0.0.1:{_closed_port()}/"))
    assert refused.reason == Reason.CONNECTION_REFUSED
    invalid = await run(HttpSpec(url="not a url"))
    assert invalid.reason == Reason.INVALID_TARGET
    # 192.0.2.1 is not on any interface here, so binding to it fails before any packet.
    unbindable = await run(HttpSpec(url="http://127.0.0.1:1/"), source="192.0.2.1")
    assert unbindable.reason == Reason.NETWORK_UNREACHABLE


async def _serve_raw(reply: bytes) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def test_it_maps_broken_responses() -> None:
    server, port = await _serve_raw(b"")
    reset = await run(HttpSpec(url=f"http://127.0.0.1:{port}/"))
    assert reset.reason == Reason.CONNECTION_RESET, reset.message
    server.close()
    server, port = await _serve_raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    garbage = await run(HttpSpec(url=f"http://127.0.0.1:{port}/"))
    assert garbage.reason == Reason.PROTOCOL_ERROR, garbage.message
    server.close()


async def test_it_reports_https_timings_and_certificate_expiry(
    ca: object, ca_pem: str, serve_tls: ServeTls
) -> None:
    port = await serve_tls(leaf(ca, days=30))  # type: ignore[arg-type]
    out = await run(HttpSpec(url=f"https://127.0.0.1:{port}/", ca_pem=ca_pem))
    assert out.status == Status.OK, out.message
    assert {"connect", "tls", "first_byte", "total"} <= out.timings.keys()
    assert 29 < float(out.details["cert_days_left"]) <= 30  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("days", "host", "reason"),
    [(-1, "127.0.0.1", Reason.CERT_EXPIRED), (30, "other.test", Reason.HOSTNAME_MISMATCH)],
    ids=["expired", "wrong-host"],
)
async def test_it_fails_bad_certificates_unless_verification_is_off(
    ca: object, ca_pem: str, serve_tls: ServeTls, days: int, host: str, reason: Reason
) -> None:
    port = await serve_tls(leaf(ca, days=days, host=host))  # type: ignore[arg-type]
    out = await run(HttpSpec(url=f"https://127.0.0.1:{port}/", ca_pem=ca_pem))
    assert out.reason == reason, out.message
    unverified = await run(HttpSpec(url=f"https://127.0.0.1:{port}/", verify_tls=False))
    assert unverified.status == Status.OK
    assert "cert_days_left" in unverified.details


async def test_it_fails_an_untrusted_certificate(ca: object, serve_tls: ServeTls) -> None:
    port = await serve_tls(leaf(ca))  # type: ignore[arg-type]
    out = await run(HttpSpec(url=f"https://127.0.0.1:{port}/"))
    assert out.reason == Reason.CERT_INVALID, out.message


async def test_it_fails_tls_to_a_plain_server(http_target: str) -> None:
    port = http_target.rsplit(":", 1)[1]
    out = await run(HttpSpec(url=f"https://127.0.0.1:{port}/"))
    assert out.reason == Reason.TLS_ERROR, out.message


MAINTENANCE = b"maintenance: database failover in progress\n" + b"x" * (100 << 10)


async def _serve_503(body: bytes = MAINTENANCE) -> tuple[object, int]:
    """A target answering 503 with headers (one a cookie) and `body` (100 KiB by default)."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        headers = {"Retry-After": "120", "Set-Cookie": "session=s3cr3t-cookie", "X-Backend": "db-2"}
        return web.Response(status=503, body=body, headers=headers, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", handle)
    return await start_app(app)


async def test_a_failed_response_keeps_its_evidence() -> None:
    runner, port = await _serve_503()
    try:
        out = await run(HttpSpec(url=f"http://127.0.0.1:{port}/"))
        assert out.status == Status.FAIL and out.reason == Reason.STATUS_MISMATCH
        evidence = out.details["evidence"]
        assert isinstance(evidence, dict)
        assert evidence["status_line"] == "HTTP/1.1 503 Service Unavailable"
        assert evidence["ips"] == ["127.0.0.1"] and evidence["reason"] == "status_mismatch"
        headers = dict(evidence["headers"])
        assert headers["Retry-After"] == "120" and headers["X-Backend"] == "db-2"
        assert headers["Set-Cookie"] == "<redacted>" and "s3cr3t" not in json.dumps(evidence, default=repr)
        # Over TEXT_UP_TO bytes the body travels compressed: the gzip of its first 64 KiB.
        packed = evidence["body_gzip"]
        assert "body" not in evidence and isinstance(packed, bytes) and len(packed) < EVIDENCE_BODY // 8
        assert evidence["body_bytes"] == EVIDENCE_BODY and evidence["body_truncated"] is True
        assert gzip.decompress(packed) == MAINTENANCE[:EVIDENCE_BODY]
        shown = unpack_body(evidence)
        assert shown["body"] == MAINTENANCE[:EVIDENCE_BODY].decode() and shown["body_truncated"] is True
        assert not {"body_gzip", "body_bytes"} & shown.keys()
        for spec in (
            HttpSpec(url=f"http://127.0.0.1:{port}/", sensitive=True),
            HttpSpec(url=f"http://127.0.0.1:{port}/", evidence_body=False),
        ):
            quiet = (await run(spec)).details["evidence"]
            assert isinstance(quiet, dict) and quiet["status_line"].endswith("503 Service Unavailable")
            assert not {"body", "body_gzip", "body_bytes", "body_truncated"} & quiet.keys()
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("size", "packed"),
    [(0, False), (TEXT_UP_TO, False), (TEXT_UP_TO + 1, True), (EVIDENCE_BODY, True)],
    ids=["empty", "text-up-to-1KiB", "packed-over-1KiB", "packed-64KiB"],
)
async def test_a_body_reads_the_same_whether_it_travels_as_text_or_packed(size: int, packed: bool) -> None:
    """Short bodies stay text; longer ones are packed. Either way a reader sees the same
    text: UTF-8 with invalid bytes (a stray 0xff) replaced."""
    sent = ("é <p>down</p>".encode() + b"\xff") * (size // 15 + 1)
    sent = sent[:size]
    runner, port = await _serve_503(sent)
    try:
        evidence = (await run(HttpSpec(url=f"http://127.0.0.1:{port}/"))).details["evidence"]
        assert isinstance(evidence, dict) and evidence["body_truncated"] is False
        assert ("body_gzip" in evidence) is packed and ("body" in evidence) is not packed
        assert unpack_body(evidence)["body"] == sent.decode("utf-8", "replace")
    finally:
        await runner.cleanup()  # type: ignore[attr-defined]


async def test_a_passing_result_keeps_no_evidence(http_target: str) -> None:
    out = await run(HttpSpec(url=f"{http_target}/"))
    assert out.status == Status.OK and "evidence" not in out.details


async def test_a_refused_connection_keeps_the_reason_and_resolved_addresses() -> None:
    out = await run(HttpSpec(url=f"http://localhost:{_closed_port()}/"))
    assert out.reason == Reason.CONNECTION_REFUSED
    evidence = out.details["evidence"]
    assert isinstance(evidence, dict) and evidence["reason"] == "connection_refused"
    assert "127.0.0.1" in evidence["ips"]  # type: ignore[operator]


async def test_a_bad_certificate_keeps_the_verification_error(
    ca: object, ca_pem: str, serve_tls: ServeTls
) -> None:
    port = await serve_tls(leaf(ca, days=-1))  # type: ignore[arg-type]
    out = await run(HttpSpec(url=f"https://127.0.0.1:{port}/", ca_pem=ca_pem))
    assert out.reason == Reason.CERT_EXPIRED
    evidence = out.details["evidence"]
    assert isinstance(evidence, dict) and evidence["reason"] == "cert_expired"
    assert "expired" in str(evidence["message"]) and evidence["ips"] == ["127.0.0.1"]


async def test_a_tls_failure_keeps_the_presented_chain(ca: object, ca_pem: str, serve_tls: ServeTls) -> None:
    """A server presenting an expired leaf and its intermediate: the evidence names both."""
    intermediate = ca.create_child_ca()  # type: ignore[attr-defined]
    port = await serve_tls(leaf(intermediate, days=-1))
    out = await run(HttpSpec(url=f"https://127.0.0.1:{port}/", ca_pem=ca_pem))
    assert out.reason == Reason.CERT_EXPIRED
    evidence = out.details["evidence"]
    assert isinstance(evidence, dict) and "expired" in str(evidence["verify_error"])
    first, second = evidence["chain"]  # type: ignore[misc]
    assert first["sans"] == ["127.0.0.1"] and first["issuer"] == second["subject"]
    assert "Probefleet Test CA" in second["issuer"] and first["not_after"] < second["not_after"]
    assert evidence["tls_version"] in ("TLSv1.2", "TLSv1.3")
