"""Multi-step API check: up to 20 HTTP requests in order under one deadline, each able to
use variables extracted from earlier responses (JSON path, regex, header, cookie) and the
flow's secrets, each with its own assertions and timings.

The requests go through the http checker's keep-alive session (probe/checkers/http.py),
whose cookie jar is a dummy: the flow keeps its own cookies, sent as a Cookie header, so
two flows never share a login. A failed step skips the rest; the teardown step runs
anyway, the diagnostic request only after a failure. Both get a reserved slice of the
budget (a tenth, at most 2 s) so that a step that hangs until the deadline still leaves
them time.
"""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import msgspec
from multidict import CIMultiDict

from probefleet.probe.checkers import base, http
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.redact import REDACTED, redact_text
from probefleet.shared.wire import ApiFlowSpec, FlowStep, Reason, Status

MAX_STEPS = 20
_MAX_BODY = 4 << 20
_VAR = re.compile(r"\{\{\s*([A-Za-z0-9_.-]+)\s*\}\}")


class _Failure(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _Flow:
    """The state of one run: variables, cookies, the secrets' values to hide."""

    def __init__(self, spec: ApiFlowSpec) -> None:
        self.spec = spec
        self.variables: dict[str, str] = dict(spec.variables)
        self.cookies: dict[str, str] = {}
        self.hidden = sorted((v for v in spec.secrets.values() if v), key=len, reverse=True)

    def fill(self, text: str) -> str:
        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("secrets."):
                key = name.removeprefix("secrets.")
                if key in self.spec.secrets:
                    return self.spec.secrets[key]
            elif name in self.variables:
                return self.variables[name]
            raise _Failure(Reason.VARIABLE_MISSING, f"{{{{{name}}}}} is not defined at this step")

        return _VAR.sub(sub, text)

    def hide(self, text: str) -> str:
        """`text` without the secrets' values and secret query values, for results."""
        text = redact_text(text, self.spec.secret_params)
        for value in self.hidden:
            text = text.replace(value, REDACTED)
        return text


def _request(flow: _Flow, step: FlowStep) -> tuple[str, str, dict[str, Any]]:
    url = flow.fill(step.url)
    headers = CIMultiDict({k: flow.fill(v) for k, v in step.headers.items()})
    if (traceparent := base.TRACEPARENT.get()) is not None:
        headers["traceparent"] = traceparent
    if flow.cookies and "cookie" not in headers:
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in flow.cookies.items())
    kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": step.follow_redirects}
    if step.body is not None:
        body = flow.fill(step.body)
        if step.body_kind == "json":
            headers.setdefault("Content-Type", "application/json")
        if step.body_kind == "form":
            kwargs["data"] = http._form(body)
        else:
            kwargs["data"] = body.encode()
    return step.method.upper(), url, kwargs


def _assert(step: FlowStep, status: int, headers: Mapping[str, str], body: bytes, ms: float) -> None:
    if not http.status_matches(status, step.expected_status):
        raise _Failure(Reason.STATUS_MISMATCH, f"status {status}, expected {step.expected_status}")
    if step.max_latency_ms is not None and ms > step.max_latency_ms:
        raise _Failure(Reason.LATENCY_EXCEEDED, f"took {ms:.0f} ms, over {step.max_latency_ms:.0f} ms")
    for name, expected in step.expected_headers.items():
        actual = headers.get(name)
        if actual is None or expected not in actual:
            raise _Failure(Reason.HEADER_MISMATCH, f"header {name} is {actual!r}, expected {expected!r}")
    text = body.decode("utf-8", "replace")
    if step.expected_content is not None and step.expected_content not in text:
        raise _Failure(Reason.KEYWORD_MISSING, f"{step.expected_content!r} not found in the body")
    if step.body_regex is not None and re.search(step.body_regex, text) is None:
        raise _Failure(Reason.KEYWORD_MISSING, f"/{step.body_regex}/ does not match the body")
    if step.json_assertions:
        doc = _json(body)
        for assertion in step.json_assertions:
            if (problem := http.evaluate(assertion, doc)) is not None:
                raise _Failure(Reason.JSON_MISMATCH, problem)


def _json(body: bytes) -> object:
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise _Failure(Reason.JSON_MISMATCH, "the body is not JSON") from None


def _extract(flow: _Flow, step: FlowStep, resp: aiohttp.ClientResponse, body: bytes) -> None:
    for item in step.extract:
        value: object = None
        if item.source == "json":
            found = http.resolve(_json(body), item.path)
            value = None if found is http._MISSING else found
        elif item.source == "regex":
            match = re.search(item.path, body.decode("utf-8", "replace"))
            value = (match.group(1) if match.re.groups else match.group(0)) if match else None
        elif item.source == "header":
            value = resp.headers.get(item.path)
        else:
            value = flow.cookies.get(item.path)
        if value is None:
            raise _Failure(Reason.EXTRACTION_FAILED, f"{item.name}: {item.source} {item.path!r} not found")
        flow.variables[item.name] = value if isinstance(value, str) else msgspec.json.encode(value).decode()


async def _run_step(
    flow: _Flow, step: FlowStep, index: int | str, session: aiohttp.ClientSession
) -> dict[str, Any]:
    """One step's record: name, method, url (secrets hidden), result, timings, and on
    failure its reason and message. Raises nothing but cancellation."""
    record: dict[str, Any] = {"step": index, "name": step.name, "method": step.method.upper()}
    trace = http._Trace()
    token = http._current.set(trace)
    start = time.perf_counter()
    try:
        method, url, kwargs = _request(flow, step)
        record["url"] = flow.hide(url)
        async with session.request(method, url, trace_request_ctx=trace, **kwargs) as resp:
            body = await resp.content.read(_MAX_BODY)
        ms = base.elapsed_ms(start)
        record["status_code"] = resp.status
        record["timings"] = http._timings(trace.hops, start, ms)
        for name, morsel in resp.cookies.items():
            flow.cookies[name] = morsel.value
        _assert(step, resp.status, resp.headers, body, ms)
        _extract(flow, step, resp, body)
    except _Failure as failure:
        record.update(result="fail", reason=failure.reason.value, message=flow.hide(failure.message)[:300])
    except Exception as exc:
        out = base.from_exception(exc)
        record.setdefault("timings", http._timings(trace.hops, start, base.elapsed_ms(start)))
        record.update(result="fail", reason=out.reason, message=flow.hide(out.message))
    else:
        record["result"] = "ok"
    finally:
        http._current.reset(token)
    return record


async def _bounded(
    flow: _Flow, step: FlowStep, index: int | str, session: aiohttp.ClientSession, until: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(loop.time() + max(0.0, until - time.perf_counter())):
            return await _run_step(flow, step, index, session)
    except TimeoutError:
        return {
            "step": index,
            "name": step.name,
            "method": step.method.upper(),
            "result": "fail",
            "reason": Reason.TIMEOUT.value,
            "message": "the flow's deadline passed during this step",
        }


async def check(spec: ApiFlowSpec, *, timeout: float, source_address: str | None) -> Outcome:
    start = time.perf_counter()
    reserve = min(2.0, timeout / 10) if spec.teardown or spec.diagnostic else 0.0
    main_until = start + timeout - reserve
    flow = _Flow(spec)
    session = http.session_for(source_address, spec.verify_tls, spec.ca_pem)
    records: list[dict[str, Any]] = []
    failed: dict[str, Any] | None = None
    for i, step in enumerate(spec.steps[:MAX_STEPS], start=1):
        if failed is not None:
            records.append({"step": i, "name": step.name, "method": step.method.upper(), "result": "skipped"})
            continue
        record = await _bounded(flow, step, i, session, main_until)
        records.append(record)
        if record["result"] != "ok":
            failed = record
    main_ms = base.elapsed_ms(start)
    details: dict[str, object] = {"steps": records}
    if failed is not None and spec.diagnostic is not None:
        details["diagnostic"] = await _bounded(flow, spec.diagnostic, "diagnostic", session, start + timeout)
    if spec.teardown is not None:
        details["teardown"] = await _bounded(flow, spec.teardown, "teardown", session, start + timeout)
    timings = {f"step{r['step']}": r["timings"]["total"] for r in records if "timings" in r}
    timings["total"] = main_ms
    if failed is not None:
        label = f"step {failed['step']}" + (f" ({failed['name']})" if failed["name"] else "")
        return base.failed(
            Reason(failed["reason"]),
            f"{label}: {failed.get('message', '')}"[:300],
            timings=timings,
            status_code=failed.get("status_code"),
            details=details,
        )
    last = records[-1] if records else {}
    out = base.passed(main_ms, spec.degraded_ms, timings=timings, details=details)
    out.status_code = last.get("status_code")
    teardown = details.get("teardown")
    if out.status == Status.OK and isinstance(teardown, dict) and teardown["result"] != "ok":
        details["teardown_failed"] = True
    return out
