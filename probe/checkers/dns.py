"""DNS check: one query through aiodns, then rcode and answer assertions."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

import aiodns
import pycares

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import DnsSpec, Reason

# c-ares reports answer codes as errors; these mean the server did answer.
_RCODES = {
    aiodns.error.ARES_ENOTFOUND: "NXDOMAIN",
    aiodns.error.ARES_ENODATA: "NOERROR",
    aiodns.error.ARES_ESERVFAIL: "SERVFAIL",
    aiodns.error.ARES_EREFUSED: "REFUSED",
    aiodns.error.ARES_EFORMERR: "FORMERR",
    aiodns.error.ARES_ENOTIMP: "NOTIMP",
}
_resolvers: dict[tuple[int, str | None, str | None], aiodns.DNSResolver] = {}
_TYPE_NAMES = {
    int(getattr(pycares, n)): n.removeprefix("QUERY_TYPE_")
    for n in dir(pycares)
    if n.startswith("QUERY_TYPE_")
}
# Evidence keeps at most this many records per section: a failed result stays small.
_EVIDENCE_RECORDS = 50


def _resolver(server: str | None, source_address: str | None) -> aiodns.DNSResolver:
    """One c-ares channel per (loop, server, source address): a channel owns a thread."""
    key = (id(asyncio.get_running_loop()), server, source_address)
    resolver = _resolvers.get(key)
    if resolver is None:
        kwargs: dict[str, Any] = {"tries": 1, "timeout": 5.0}
        if source_address:
            kwargs["local_ip"] = source_address
        resolver = aiodns.DNSResolver(nameservers=[server] if server else None, **kwargs)
        _resolvers[key] = resolver
    return resolver


async def close_resolvers() -> None:
    loop_id = id(asyncio.get_running_loop())
    for key in [k for k in _resolvers if k[0] == loop_id]:
        await _resolvers.pop(key).close()


def _query_name(spec: DnsSpec) -> str:
    if spec.record_type == "PTR":
        try:
            return ipaddress.ip_address(spec.name).reverse_pointer
        except ValueError:
            pass
    return spec.name


def record_text(data: object) -> str:
    """One answer as text, in the form users write expected values in."""
    match data:
        case pycares.ARecordData() | pycares.AAAARecordData():
            return data.addr
        case pycares.CNAMERecordData():
            return data.cname
        case pycares.MXRecordData():
            return f"{data.priority} {data.exchange}"
        case pycares.TXTRecordData():
            return data.data.decode("utf-8", "replace")
        case pycares.NSRecordData():
            return data.nsdname
        case pycares.PTRRecordData():
            return data.dname
        case pycares.SOARecordData():
            return f"{data.mname} {data.rname} {data.serial}"
        case pycares.SRVRecordData():
            return f"{data.priority} {data.weight} {data.port} {data.target}"
        case pycares.CAARecordData():
            return f"{data.critical} {data.tag} {data.value}"
    return str(data)


def _norm(value: str) -> str:
    return value.strip().rstrip(".").lower()


def _answers_match(spec: DnsSpec, answers: list[str]) -> bool:
    got = {_norm(a) for a in answers}
    expected = [_norm(v) for v in spec.expected_values]
    hits = [v in got for v in expected]
    return all(hits) if spec.match == "all" else any(hits)


def _records(section: list[Any]) -> list[dict[str, object]]:
    return [
        {
            "name": r.name,
            "type": _TYPE_NAMES.get(r.type, str(r.type)),
            "ttl": r.ttl,
            "data": record_text(r.data),
        }
        for r in section[:_EVIDENCE_RECORDS]
    ]


def evidence(
    spec: DnsSpec, out: Outcome, rcode: str | None, result: pycares.DNSResult | None
) -> dict[str, object]:
    """The full answer of a failed query: which resolver was asked, the rcode, and every
    record of the answer, authority and additional sections (not only the asked type)."""
    ev: dict[str, object] = {
        "reason": str(out.reason),
        "message": out.message,
        "resolver": spec.resolver or "system",
        "query": {"name": _query_name(spec), "type": spec.record_type},
    }
    if rcode is not None:
        ev["rcode"] = rcode
        ev["answer"] = []  # c-ares reports NXDOMAIN and NODATA as errors, with no records
    if result is not None:
        ev["answer"] = _records(result.answer)
        ev["authority"] = _records(result.authority)
        ev["additional"] = _records(result.additional)
    return ev


async def check(spec: DnsSpec, *, timeout: float, source_address: str | None) -> Outcome:
    start = time.perf_counter()
    rcode = "NOERROR"
    answers: list[str] = []
    result: pycares.DNSResult | None = None
    if source_address and (unbound := base.bind_error(source_address)) is not None:
        # c-ares would wait out its timeout and say only that.
        return base.from_exception(unbound, timings={"total": base.elapsed_ms(start)})
    try:
        resolver = _resolver(spec.resolver, source_address)
        async with asyncio.timeout(timeout):
            result = await resolver.query_dns(_query_name(spec), spec.record_type)
        answers = [record_text(r.data) for r in result.answer if r.type == _qtype(spec)]
    except aiodns.error.DNSError as exc:
        code = exc.args[0] if exc.args else None
        if code not in _RCODES:
            out = base.from_exception(exc, timings={"total": base.elapsed_ms(start)})
            out.details = {"evidence": evidence(spec, out, None, None)}
            return out
        rcode = _RCODES[code]
    except Exception as exc:
        out = base.from_exception(exc, timings={"total": base.elapsed_ms(start)})
        out.details = {"evidence": evidence(spec, out, None, None)}
        return out
    total = base.elapsed_ms(start)
    fields: dict[str, Any] = {
        "timings": {"total": total},
        "details": {"rcode": rcode, "answers": answers},
    }
    failure: tuple[Reason, str] | None = None
    if rcode != spec.expected_rcode.upper():
        failure = Reason.RCODE_MISMATCH, f"rcode {rcode}, expected {spec.expected_rcode.upper()}"
    elif spec.expected_values and not _answers_match(spec, answers):
        failure = (
            Reason.ANSWER_MISMATCH,
            f"answers {answers} do not match {spec.match} of {spec.expected_values}",
        )
    if failure is None:
        return base.passed(total, spec.degraded_ms, **fields)
    out = base.failed(*failure, **fields)
    out.details["evidence"] = evidence(spec, out, rcode, result)
    return out


def _qtype(spec: DnsSpec) -> int:
    return int(getattr(pycares, f"QUERY_TYPE_{spec.record_type}"))
