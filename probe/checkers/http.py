"""HTTP(S) check: one request (and its redirects), then status, content, JSON and GraphQL
assertions.

Timings describe the whole redirect chain: dns, connect and tls are summed over every
request of the chain, as blackbox_exporter sums each round trip's phases into
probe_http_duration_seconds
(https://github.com/prometheus/blackbox_exporter/blob/master/prober/http.go); first_byte
and total run from the start of the check to the final response, and redirect is the part
before the final request.
"""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import re
import socket
import ssl
import time
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import msgspec
import yarl
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from multidict import CIMultiDict

from probefleet.probe import x509
from probefleet.probe.checkers import base, http1
from probefleet.probe.checkers.base import Outcome
from probefleet.probe.evidence import http_response
from probefleet.shared.redact import redact_text, redact_url
from probefleet.shared.wire import Assertion, HttpSpec, Reason

_MAX_BODY = 4 << 20
_sessions: dict[tuple[int, str | None, bool, str | None], aiohttp.ClientSession] = {}
# aiohttp's default ClientTimeout (total 300 s) arms and cancels a timer for every request,
# and it never fires first: every check runs under its own asyncio.timeout, at most the
# monitor's timeout (120 s at most). sock_connect keeps aiohttp's default 30 s, which only
# new connections arm.
_SESSION_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30)
# Parsed URLs by the spec's text. yarl parses and quotes a URL in about 2.4 us and keeps the
# last 128 itself; a probe checks each of its monitors' URLs again every interval. Cleared
# when full (about 1 KiB an entry): a probe with more monitors parses as before.
_URLS_MAX = 2048
_urls: dict[str, yarl.URL] = {}
# Certificate details by (session, host, port): a reused keep-alive connection
# has no handshake of its own to read them from.
_certs: dict[tuple[int, str | None, int | None], dict[str, object]] = {}


class _Trace:
    """One check's timestamps, one dict per request of the redirect chain, and the TLS
    object of the last handshake with the request (index into hops) it belongs to."""

    __slots__ = ("hops", "ssl_hop", "ssl_object")

    def __init__(self) -> None:
        self.hops: list[dict[str, float]] = [{}]
        self.ssl_object: ssl.SSLObject | None = None
        self.ssl_hop = -1

    def phases(self) -> dict[str, float]:
        """The current request's timestamps: a new dict once the last one has its answer
        (the next request of a redirect chain has started)."""
        hop = self.hops[-1]
        if "first_byte" in hop:
            hop = {}
            self.hops.append(hop)
        return hop


# The running check's trace. aiohttp runs the connection set-up (and the DNS lookup, in a
# task it starts from there) and the response start in the task of the request, so the
# marks below find the check they belong to without aiohttp's TraceConfig signals, which
# cost about 20 us per request even on a reused connection (seven signals awaited per
# request, whether a phase happened or not: 141.8 -> 119.6 us of CPU per check in-process,
# median of four alternating runs).
_current: contextvars.ContextVar[_Trace | None] = contextvars.ContextVar("http_trace", default=None)


def _mark(name: str) -> None:
    trace = _current.get()
    if trace is not None:
        trace.phases().setdefault(name, time.perf_counter())


class _TimedTLSContext(ssl.SSLContext):
    """Marks the start of each TLS handshake.

    asyncio and uvloop call wrap_bio once the TCP connection is up, in the context of
    the task that asked for the connection, so the mark lands in that request.
    """

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        ssl_object = super().wrap_bio(*args, **kwargs)
        trace = _current.get()
        if trace is not None:
            trace.phases()["tls_start"] = time.perf_counter()
            trace.ssl_object, trace.ssl_hop = ssl_object, len(trace.hops) - 1
        return ssl_object


def _ssl_context(verify: bool, ca_pem: str | None) -> ssl.SSLContext:
    ctx = _TimedTLSContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_default_certs()
        if ca_pem:
            ctx.load_verify_locations(cadata=ca_pem)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _TimedResolver(AbstractResolver):
    """aiohttp's default resolver, timed: the connector calls it only for a name that is
    not in its DNS cache (an address literal and a cached name are no lookup), from a task
    it starts in the request's context."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> Any:
        _mark("dns_start")
        addrs = await self._inner.resolve(host, port, family)
        _mark("dns_end")
        return addrs

    async def close(self) -> None:
        await self._inner.close()


class _TimedConnector(aiohttp.TCPConnector):
    """Marks the start and end of each new connection (TCP connect and TLS handshake, or
    the DNS lookup before them); a connection taken from the keep-alive pool has none."""

    def __init__(self, **kwargs: Any) -> None:
        self._timed_resolver = _TimedResolver()
        super().__init__(resolver=self._timed_resolver, **kwargs)

    async def _create_connection(self, req: Any, traces: Any, timeout: aiohttp.ClientTimeout) -> Any:
        _mark("conn_start")
        proto = await super()._create_connection(req, traces, timeout)
        _mark("conn_end")
        return proto

    async def close(self, *, abort_ssl: bool = False) -> None:
        await super().close(abort_ssl=abort_ssl)
        await self._timed_resolver.close()


class _TimedResponse(aiohttp.ClientResponse):
    """Marks first_byte when a response's status line and headers have been read: the
    final response's, or a redirect's, after which the next request's marks start."""

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        resp = await super().start(connection)
        _mark("first_byte")
        return resp


def session_for(source_address: str | None, verify_tls: bool, ca_pem: str | None) -> aiohttp.ClientSession:
    """One keep-alive session per (loop, source address, TLS settings) in this process."""
    key = (id(asyncio.get_running_loop()), source_address, verify_tls, ca_pem)
    session = _sessions.get(key)
    if session is None or session.closed:
        connector = _TimedConnector(
            limit=0,
            local_addr=base.local_addr(source_address),
            ssl=_ssl_context(verify_tls, ca_pem),
            ttl_dns_cache=60,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            response_class=_TimedResponse,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            timeout=_SESSION_TIMEOUT,
        )
        _sessions[key] = session
    return session


async def close_sessions() -> None:
    """Close this event loop's sessions; agents of one loop stopping at once may call it
    together (each pops a session before awaiting its close, so none is closed twice)."""
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _sessions if k[0] == loop_id]:
        session = _sessions.pop(key, None)
        if session is not None:
            await session.close()
    http1.close(loop_id)
    _certs.clear()


def _url(text: str) -> yarl.URL | str:
    """`text` parsed, from `_urls` when seen before; the text itself when yarl refuses it
    (aiohttp then raises its own error for it, as for any bad URL)."""
    url = _urls.get(text)
    if url is None:
        try:
            url = yarl.URL(text)
        except ValueError:
            return text
        if len(_urls) >= _URLS_MAX:
            _urls.clear()
        _urls[text] = url
    return url


def _request_kwargs(spec: HttpSpec) -> dict[str, Any]:
    headers = CIMultiDict(spec.headers)
    if (traceparent := base.TRACEPARENT.get()) is not None:
        headers["traceparent"] = traceparent
    kwargs: dict[str, Any] = {"headers": headers}
    if spec.graphql_query is not None:
        payload = {"query": spec.graphql_query, "variables": spec.graphql_variables or {}}
        kwargs["json"] = payload
    elif spec.body is not None:
        if spec.body_kind == "json":
            headers.setdefault("Content-Type", "application/json")
            kwargs["data"] = spec.body.encode()
        elif spec.body_kind == "form":
            kwargs["data"] = _form(spec.body)
        else:
            kwargs["data"] = spec.body.encode()
    if spec.basic_auth is not None:
        user, password = spec.basic_auth
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    if spec.bearer_token is not None:
        headers["Authorization"] = f"Bearer {spec.bearer_token}"
    # aiohttp counts the response that would be followed next, hence the + 1.
    kwargs["allow_redirects"] = spec.follow_redirects and spec.max_redirects > 0
    kwargs["max_redirects"] = spec.max_redirects + 1
    return kwargs


def _form(body: str) -> dict[str, str]:
    """A form body is a JSON object or an urlencoded string."""
    if body.lstrip().startswith("{"):
        return {k: str(v) for k, v in json.loads(body).items()}
    return dict(parse_qsl(body, keep_blank_values=True))


def _timings(hops: list[dict[str, float]], start: float, total_ms: float) -> dict[str, float]:
    """dns, connect and tls summed over the requests that did them (a reused keep-alive
    connection adds nothing); first_byte of the final response and redirect (up to the
    last redirect's headers) from `start`."""
    sums: dict[str, float] = {}
    for phases in hops:
        connect_from = "dns_end" if "dns_end" in phases else "conn_start"
        connect_to = "tls_start" if "tls_start" in phases else "conn_end"
        for name, a, b in (
            ("dns", "dns_start", "dns_end"),
            ("connect", connect_from, connect_to),
            ("tls", "tls_start", "conn_end"),
        ):
            if a in phases and b in phases:
                sums[name] = sums.get(name, 0.0) + phases[b] - phases[a]
    out = {k: round(v * 1000, 3) for k, v in sums.items()}
    if "first_byte" in hops[-1]:
        out["first_byte"] = round((hops[-1]["first_byte"] - start) * 1000, 3)
    if len(hops) > 1:
        out["redirect"] = round((hops[-2]["first_byte"] - start) * 1000, 3)
    out["total"] = total_ms
    return out


def status_matches(code: int, expected: list[int | str]) -> bool:
    for item in expected:
        text = str(item).lower()
        if text.endswith("xx") and len(text) == 3 and text[0] == str(code // 100):
            return True
        if text.isdigit() and int(text) == code:
            return True
    return False


def _cert_details(ssl_object: ssl.SSLObject) -> dict[str, object]:
    der = ssl_object.getpeercert(binary_form=True)
    try:
        info = x509.parse(der or b"")
    except ValueError:
        return {}
    return {
        "cert_not_after": info.not_after.isoformat(),
        "cert_days_left": round(info.days_left(), 2),
        "tls_version": ssl_object.version(),
    }


def _remember_cert(
    session: aiohttp.ClientSession, resp: aiohttp.ClientResponse, trace: _Trace
) -> dict[str, object]:
    if resp.url.scheme != "https":
        return {}
    key = (id(session), resp.url.host, resp.url.port)
    if trace.ssl_object is not None and trace.ssl_hop == len(trace.hops) - 1:
        _certs[key] = _cert_details(trace.ssl_object)
    return _certs.get(key, {})


async def check(spec: HttpSpec, *, timeout: float, source_address: str | None) -> Outcome:
    trace = _Trace()
    token = _current.set(trace)
    start = time.perf_counter()
    method = "POST" if spec.graphql_query is not None else spec.method.upper()
    url = _url(spec.url)
    plain = http1.takes(spec, url, method)
    try:
        if plain:
            assert isinstance(url, yarl.URL)
            async with base.timeout(timeout):
                answer = await http1.get(
                    url,
                    traceparent=base.TRACEPARENT.get(),
                    source_address=source_address,
                    verify_tls=spec.verify_tls,
                    ca_pem=spec.ca_pem,
                    ssl_context=_plain_context,
                    mark=_mark,
                    read_max=_MAX_BODY,
                )
        else:
            session = session_for(source_address, spec.verify_tls, spec.ca_pem)
            async with (
                base.timeout(timeout),
                session.request(method, url, **_request_kwargs(spec)) as resp,
            ):
                peer = _peer(resp)
                body = await resp.content.read(_MAX_BODY)
    except Exception as exc:
        timings = _timings(trace.hops, start, base.elapsed_ms(start))
        out = base.from_exception(exc, timings=timings)
        # Results are shown to read-only keys and sent in notifications; aiohttp quotes the
        # request URL in some errors (too many redirects: url='...?token=...').
        out.message = redact_text(out.message, spec.secret_params)
        remaining = timeout - (time.perf_counter() - start)
        evidence = await _failure_evidence(spec, out, remaining)
        if isinstance(exc, aiohttp.ClientSSLError | ssl.SSLError):
            remaining = timeout - (time.perf_counter() - start)
            evidence |= {"verify_error": out.message, **await _presented(spec, remaining, source_address)}
        out.details = {"evidence": evidence}
        return out
    finally:
        _current.reset(token)
    if plain:
        if spec.follow_redirects and spec.max_redirects > 0 and _is_redirect(answer.status, answer.headers):
            # The session follows redirects (methods, credentials across origins, history):
            # this URL goes to it from now on, this check within what is left of the budget.
            if len(http1.redirected) >= _URLS_MAX:
                http1.redirected.clear()
            http1.redirected.add(spec.url)
            return await check(
                spec, timeout=timeout - (time.perf_counter() - start), source_address=source_address
            )
        return _plain_outcome(
            spec, answer, trace, start, (hash((source_address, spec.verify_tls, spec.ca_pem)), url)
        )
    total_ms = base.elapsed_ms(start)
    details: dict[str, object] = {"size": len(body), **_remember_cert(session, resp, trace)}
    if resp.history:
        details["redirects"] = len(resp.history)
        details["final_url"] = redact_url(str(resp.url), spec.secret_params)
    fields: dict[str, Any] = {
        "timings": _timings(trace.hops, start, total_ms),
        "status_code": resp.status,
        "details": details,
    }
    failure = _assert(spec, resp.status, body)
    if failure is not None:
        details["evidence"] = response_evidence(spec, resp, body, peer, failure)
        return base.failed(*failure, **fields)
    return base.passed(total_ms, spec.degraded_ms, **fields)


_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def _is_redirect(status: int, headers: Any) -> bool:
    return status in _REDIRECTS and "Location" in headers


def _plain_outcome(
    spec: HttpSpec, answer: http1.Answer, trace: _Trace, start: float, where: tuple[int, Any]
) -> Outcome:
    """The outcome of a check that went the plain path (http1)."""
    total_ms = base.elapsed_ms(start)
    details: dict[str, object] = {"size": len(answer.body)}
    url = where[1]
    if url.scheme == "https":
        key = (where[0], url.raw_host, url.port)
        if trace.ssl_object is not None and trace.ssl_hop == len(trace.hops) - 1:
            _certs[key] = _cert_details(trace.ssl_object)
        details |= _certs.get(key, {})
    fields: dict[str, Any] = {
        "timings": _timings(trace.hops, start, total_ms),
        "status_code": answer.status,
        "details": details,
    }
    failure = _assert(spec, answer.status, answer.body)
    if failure is not None:
        version = f"HTTP/{answer.version.major}.{answer.version.minor}"
        details["evidence"] = http_response(
            spec,
            failure,
            ips=[answer.peer] if answer.peer else [],
            status_line=f"{version} {answer.status} {answer.reason or ''}".strip(),
            headers=answer.headers.items(),
            body=answer.body,
        )
        return base.failed(*failure, **fields)
    return base.passed(total_ms, spec.degraded_ms, **fields)


_plain_contexts: dict[tuple[bool, str | None], ssl.SSLContext] = {}


def _plain_context(verify: bool, ca_pem: str | None) -> ssl.SSLContext:
    ctx = _plain_contexts.get((verify, ca_pem))
    if ctx is None:
        if len(_plain_contexts) >= 64:
            _plain_contexts.clear()
        ctx = _plain_contexts[(verify, ca_pem)] = _ssl_context(verify, ca_pem)
    return ctx


def _peer(resp: aiohttp.ClientResponse) -> str | None:
    """The address the response came from (the resolved IP that answered).

    aiohttp detaches `resp.connection` as soon as the whole response is buffered (a small
    body), so the protocol's transport is the one place that still knows the peer; if a
    later aiohttp moves it, evidence only loses the address."""
    protocol = getattr(resp, "_protocol", None)
    transport = getattr(protocol, "transport", None)
    peername = transport.get_extra_info("peername") if transport is not None else None
    return str(peername[0]) if peername else None


def response_evidence(
    spec: HttpSpec,
    resp: aiohttp.ClientResponse,
    body: bytes,
    peer: str | None,
    failure: tuple[Reason, str],
) -> dict[str, object]:
    """The response's evidence (probe/evidence.py): the address that answered, status
    line, headers, the final URL after redirects, the body."""
    version = f"HTTP/{resp.version.major}.{resp.version.minor}" if resp.version else "HTTP"
    return http_response(
        spec,
        failure,
        ips=[peer] if peer else [],
        status_line=f"{version} {resp.status} {resp.reason or ''}".strip(),
        headers=resp.headers.items(),
        body=body,
        final_url=str(resp.url) if resp.history else None,
    )


async def _failure_evidence(spec: HttpSpec, out: Outcome, remaining: float) -> dict[str, object]:
    """For a request that got no answer: the reason and the addresses the name resolves to
    now (looked up again within what is left of the budget, at most 1 s; none for an
    address literal that is not one)."""
    evidence: dict[str, object] = {"reason": str(out.reason), "message": out.message}
    try:
        url = yarl.URL(spec.url)
    except (ValueError, TypeError):
        return evidence
    if url.host is None or remaining <= 0:
        return evidence
    try:
        async with asyncio.timeout(min(1.0, remaining)):
            infos = await asyncio.get_running_loop().getaddrinfo(url.host, url.port)
    except (OSError, TimeoutError, ValueError, UnicodeError) as exc:
        evidence["dns_error"] = f"{type(exc).__name__}: {exc}"[:200]
        return evidence
    evidence["ips"] = sorted({str(info[4][0]) for info in infos})
    return evidence


async def _presented(spec: HttpSpec, budget: float, source_address: str | None) -> dict[str, object]:
    """For a TLS failure: the chain the URL's server presents, read by a handshake that
    verifies nothing (within the budget, at most 2 s), each certificate as x509.summary."""
    url = yarl.URL(spec.url)
    if url.host is None or budget <= 0:
        return {"chain_error": "no time left to read the certificate"}
    ctx = base.tls_context(verify=False, ca_pem=None)
    presented = x509.record_chain(ctx)
    try:
        async with asyncio.timeout(min(budget, 2.0)):
            _, writer = await asyncio.open_connection(
                url.host,
                url.port or 443,
                ssl=ctx,
                server_hostname=url.host,
                local_addr=base.local_addr(source_address),
            )
    except Exception as exc:
        return {"chain_error": f"{type(exc).__name__}: {exc}"[:200]}
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        leaf, version = ssl_object.getpeercert(binary_form=True), ssl_object.version()
    finally:
        writer.close()
    certs = presented.certs or ([leaf] if leaf else [])
    return {"chain": [x509.summary(der) for der in certs[: x509.MAX_CHAIN]], "tls_version": version}


def _assert(spec: HttpSpec, status: int, body: bytes) -> tuple[Reason, str] | None:
    if not status_matches(status, spec.expected_status):
        return Reason.STATUS_MISMATCH, f"status {status}, expected {spec.expected_status}"
    if spec.expected_content is not None or spec.excluded_content is not None:
        # Decoded only for a keyword: 118 KiB of text with a quarter accented letters took 63 us.
        text = body.decode("utf-8", "replace")
        if spec.expected_content is not None and not _contains(text, spec.expected_content, spec):
            return Reason.KEYWORD_MISSING, f"{spec.expected_content!r} not found in the body"
        if spec.excluded_content is not None and _contains(text, spec.excluded_content, spec):
            return Reason.KEYWORD_PRESENT, f"{spec.excluded_content!r} found in the body"
    if spec.graphql_query is not None or spec.json_assertions:
        return _assert_json(spec, body)
    return None


def _contains(text: str, needle: str, spec: HttpSpec) -> bool:
    if spec.content_regex:
        return re.search(needle, text) is not None
    return needle in text


def _assert_json(spec: HttpSpec, body: bytes) -> tuple[Reason, str] | None:
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return Reason.JSON_MISMATCH, "the body is not JSON"
    if spec.graphql_query is not None and isinstance(doc, dict) and doc.get("errors"):
        first = doc["errors"][0]
        text = first.get("message", first) if isinstance(first, dict) else first
        return Reason.GRAPHQL_ERROR, f"GraphQL errors: {text}"[:300]
    for assertion in spec.json_assertions:
        problem = evaluate(assertion, doc)
        if problem is not None:
            return Reason.JSON_MISMATCH, problem
    return None


_MISSING = object()
_PATH_TOKEN = re.compile(r"[^.\[\]]+|\[(\d+)\]")


def resolve(doc: object, path: str) -> object:
    """Value at a dotted path such as `$.data.items[0].name`, or a sentinel when absent."""
    value = doc
    for match in _PATH_TOKEN.finditer(path.removeprefix("$").lstrip(".")):
        index, key = match.group(1), match.group(0)
        if index is not None and isinstance(value, list) and int(index) < len(value):
            value = value[int(index)]
        elif index is None and isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return _MISSING
    return value


def evaluate(assertion: Assertion, doc: object) -> str | None:
    """None when the assertion holds, else a short explanation."""
    actual = resolve(doc, assertion.path)
    if actual is _MISSING:
        return f"{assertion.path} not found"
    expected = assertion.value
    if _holds(assertion.op, actual, expected):
        return None
    return f"{assertion.path} = {actual!r}, expected {assertion.op} {expected!r}"


def _holds(op: str, actual: object, expected: object) -> bool:
    match op:
        case "exists":
            return True
        case "equals":
            return actual == expected or str(actual) == str(expected)
        case "not_equals":
            return not (actual == expected or str(actual) == str(expected))
        case "contains":
            if isinstance(actual, str):
                return str(expected) in actual
            if isinstance(actual, list | dict):
                return any(x == expected or str(x) == str(expected) for x in actual)
            return False
        case "lt" | "lte" | "gt" | "gte":
            try:
                a, b = float(actual), float(expected)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return False
            return {"lt": a < b, "lte": a <= b, "gt": a > b, "gte": a >= b}[op]
    return False
