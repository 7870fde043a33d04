"""MQTT check: connect (and authenticate); with a topic, subscribe, publish the payload
and wait for it to come back. aiomqtt is imported when a check runs."""

# The registry's signature takes the job's time budget as `timeout`.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import time
import uuid

from probefleet.probe.checkers import base
from probefleet.probe.checkers.base import Outcome
from probefleet.shared.wire import MqttSpec, Reason

REQUIRES = ("aiomqtt",)
# CONNACK return codes (MQTT 3.1.1 3.2.2.3) that mean the credentials were refused.
_AUTH_CODES = {4, 5, 134, 135}


async def check(spec: MqttSpec, *, timeout: float, source_address: str | None) -> Outcome:
    import aiomqtt

    start = time.perf_counter()
    timings: dict[str, float] = {}
    ctx = base.tls_context(verify=spec.verify_tls, ca_pem=spec.ca_pem) if spec.tls else None
    # A payload of this run's own: another probe's round trip on the topic is not ours.
    payload = f"{spec.payload} {uuid.uuid4().hex}"
    try:
        async with asyncio.timeout(timeout):
            client = aiomqtt.Client(
                spec.host,
                spec.port,
                username=spec.username,
                password=spec.password,
                identifier=f"probefleet-{uuid.uuid4().hex[:12]}",
                tls_context=ctx,
                tls_insecure=(not spec.verify_tls) if spec.tls else None,
                timeout=timeout,
                bind_address=source_address or "",
            )
            async with client:
                timings["connect"] = base.elapsed_ms(start)
                if spec.topic is not None:
                    await client.subscribe(spec.topic, qos=spec.qos)
                    await client.publish(spec.topic, payload.encode(), qos=spec.qos)
                    async for message in client.messages:
                        if message.payload == payload.encode():
                            timings["round_trip"] = round(base.elapsed_ms(start) - timings["connect"], 3)
                            break
    except aiomqtt.MqttCodeError as exc:
        code = getattr(exc.rc, "value", exc.rc)
        reason = Reason.AUTH_FAILED if code in _AUTH_CODES else Reason.PROTOCOL_ERROR
        return base.failed(reason, str(exc)[:300], timings=_total(timings, start))
    except TimeoutError:
        if "connect" in timings and spec.topic is not None:
            lost = f"the message published on {spec.topic!r} did not come back"
            return base.failed(Reason.NO_RESPONSE, lost, timings=_total(timings, start))
        return base.failed(Reason.TIMEOUT, "timed out", timings=_total(timings, start))
    except aiomqtt.MqttError as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, OSError):
            return base.from_exception(cause, timings=_total(timings, start))
        text = str(exc)
        reason = Reason.CONNECTION_REFUSED if "refused" in text.lower() else Reason.PROTOCOL_ERROR
        return base.failed(reason, text[:300], timings=_total(timings, start))
    except Exception as exc:
        return base.from_exception(exc, timings=_total(timings, start))
    total = _total(timings, start)
    return base.passed(timings.get("round_trip", timings["connect"]), spec.degraded_ms, timings=total)


def _total(timings: dict[str, float], start: float) -> dict[str, float]:
    return {**timings, "total": base.elapsed_ms(start)}
