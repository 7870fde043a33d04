"""What every notifier shares: the notification, the error type, secrets and HTTP mapping.

A notifier is one async function `send(session, config, note)`. It returns when the
service accepted the message and raises `NotifierError` otherwise; `permanent=True`
tells the dispatcher that retrying cannot succeed and the channel should be disabled.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import time
import typing
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
import msgspec

from probefleet.controller.notifications import destinations
from probefleet.shared.version import VERSION

Event = Literal[
    "monitor.down",
    "monitor.up",
    "monitor.degraded",
    "incident.opened",
    "incident.acknowledged",
    "incident.resolved",
    # The incident's update with what the failing regions' diagnoses found.
    "incident.diagnosed",
    "ssl.expiring",
    "region.unavailable",
    "test",
]

USER_AGENT = f"probefleet-notifier/{VERSION}"
REDACTED = "<redacted>"


class MonitorInfo(msgspec.Struct, kw_only=True):
    id: int | str
    name: str
    target: str = ""
    type: str = ""
    status: str = ""
    locations: list[str] = []


class IncidentInfo(msgspec.Struct, kw_only=True):
    id: int | str
    status: str = "open"
    severity: str | None = None
    started_at: float | None = None
    resolved_at: float | None = None
    duration_s: float | None = None
    root_cause: str | None = None
    affected_regions: list[str] = []
    checks_failed: int | None = None
    checks_total: int | None = None


class CheckInfo(msgspec.Struct, kw_only=True):
    region: str | None = None
    status: str | None = None
    reason: str | None = None
    message: str | None = None
    response_time_ms: float | None = None
    status_code: int | None = None


class Notification(msgspec.Struct, kw_only=True):
    """One event to tell one channel about; built by the dispatcher from an event row."""

    event: Event
    event_id: int
    timestamp: float
    monitor: MonitorInfo
    incident: IncidentInfo | None = None
    check: CheckInfo | None = None
    reminder: bool = False
    escalation_level: int = 0
    # Unique per delivery (the event id for the first notice of an event); reminders
    # and escalations of one event get their own, so receivers that dedupe keep them.
    delivery_key: str | None = None
    # The incident's page in the console (else the monitor's), when the controller knows
    # its public address; every notifier shows it.
    link: str | None = None
    # Other monitors whose outage this one notification also reports (rules' group_by).
    group: list[MonitorInfo] = []
    # incident.diagnosed: one line per failing region ("us-east: tcp traceroute reached
    # 10.0.0.1 in 7 hops, DNS 10.0.0.1 via 127.0.0.53, TLS chain ok").
    diagnostics: list[str] = []


class NotifierError(Exception):
    """A delivery failed. Transient ones are retried; permanent ones disable the channel."""

    def __init__(self, message: str, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"NotifierError({self.message!r}, permanent={self.permanent}, retry_after={self.retry_after})"


# ---------------------------------------------------------------- secrets

Mask = Literal["full", "url", "values"]

URL_PATTERN = r"^https?://[^\s/?#]+[^\s]*$"
HttpUrl = Annotated[str, msgspec.Meta(pattern=URL_PATTERN, max_length=2048)]
SecretStr = Annotated[str, msgspec.Meta(min_length=1, max_length=4096, extra={"secret": "full"})]
SecretUrl = Annotated[str, msgspec.Meta(pattern=URL_PATTERN, max_length=2048, extra={"secret": "url"})]
SecretHeaders = Annotated[dict[str, str], msgspec.Meta(extra={"secret": "values"})]


class ChannelConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of every channel config: its repr never shows a secret."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in redact(self).items() if k != "kind")
        return f"{type(self).__name__}({fields})"

    __str__ = __repr__


C_contra = TypeVar("C_contra", bound=ChannelConfig, contravariant=True)


class Notifier(Protocol[C_contra]):
    async def __call__(
        self, session: aiohttp.ClientSession, config: C_contra, note: Notification, /
    ) -> None: ...


def _mask_of(tp: Any) -> Mask | None:
    if typing.get_origin(tp) is Annotated:
        for meta in tp.__metadata__:
            if isinstance(meta, msgspec.Meta) and meta.extra and "secret" in meta.extra:
                return typing.cast(Mask, meta.extra["secret"])
        return None
    for arg in typing.get_args(tp):
        if (mask := _mask_of(arg)) is not None:
            return mask
    return None


@functools.cache
def secret_fields(cls: type[ChannelConfig]) -> dict[str, Mask]:
    """Field name -> how to mask it, read from the `Secret*` annotations."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name: f.encode_name for f in msgspec.structs.fields(cls)}
    return {
        names[name]: mask
        for name, tp in hints.items()
        if name in names and (mask := _mask_of(tp)) is not None
    }


def _is_url(tp: Any) -> bool:
    if typing.get_origin(tp) is Annotated:
        return any(isinstance(m, msgspec.Meta) and m.pattern == URL_PATTERN for m in tp.__metadata__)
    return any(_is_url(arg) for arg in typing.get_args(tp))


@functools.cache
def url_fields(cls: type[ChannelConfig]) -> tuple[str, ...]:
    """Names of the fields typed HttpUrl or SecretUrl: where the notifier sends requests."""
    hints = typing.get_type_hints(cls, include_extras=True)
    return tuple(f.encode_name for f in msgspec.structs.fields(cls) if _is_url(hints[f.name]))


def urls(config: ChannelConfig) -> dict[str, str]:
    """Field name -> URL for every destination of the config (secrets included)."""
    data = msgspec.to_builtins(config)
    return {name: data[name] for name in url_fields(type(config)) if isinstance(data.get(name), str)}


def mask_url(url: str) -> str:
    """Keep scheme and host so a user can tell channels apart; hide path and query."""
    parts = urlsplit(url)
    tail = url[-4:] if len(url) - len(parts.scheme) - len(parts.netloc) >= 16 else ""
    return f"{parts.scheme}://{parts.hostname or ''}/…/****{tail}"


def _masked(value: Any, mask: Mask) -> Any:
    if value is None:
        return None
    if mask == "url" and isinstance(value, str):
        return mask_url(value)
    if mask == "values" and isinstance(value, dict):
        return dict.fromkeys(value, REDACTED)
    return REDACTED


def redact(config: ChannelConfig) -> dict[str, Any]:
    """The config as plain data, fit for the API and logs: secrets masked."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    for name, mask in secret_fields(type(config)).items():
        if name in data:
            data[name] = _masked(data[name], mask)
    return data


# ---------------------------------------------------------------- rendering helpers


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- HTTP


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_for_status(
    service: str, status: int, body: str, retry_after_s: float | None = None
) -> NotifierError | None:
    """None for 2xx; otherwise the NotifierError the dispatcher should act on."""
    if 200 <= status < 300:
        return None
    detail = f"{service}: HTTP {status}: {body.strip()[:200]}".rstrip(": ")
    if status in (408, 429) or status >= 500:
        return NotifierError(detail, retry_after=retry_after_s)
    # A redirect means the configured URL is stale; following it would resend a
    # signed payload to an address nobody configured.
    return NotifierError(detail, permanent=True)


def error_for_exception(service: str, exc: BaseException) -> NotifierError:
    """Map an aiohttp/asyncio exception, most specific first. Never includes the URL."""
    match exc:
        case aiohttp.InvalidURL():
            return NotifierError(f"{service}: invalid URL", permanent=True)
        # The address is refused (controller.destinations): it is a setting, not an outage.
        case destinations.DestinationError():
            return NotifierError(f"{service}: destination refused: {exc}", permanent=True)
        case aiohttp.ClientConnectorError() if isinstance(exc.os_error, destinations.RefusedError):
            return NotifierError(f"{service}: {exc.os_error}", permanent=True)
        case aiohttp.ClientConnectorError():
            return NotifierError(f"{service}: cannot connect to {exc.host}:{exc.port}: {exc.os_error}")
        case TimeoutError() | asyncio.TimeoutError():
            return NotifierError(f"{service}: timed out")
        case aiohttp.ClientError():
            return NotifierError(f"{service}: {type(exc).__name__}")
        case ValueError():
            # Raised while building the request (bad URL or header): the same config
            # fails the same way every time. str(exc) may quote the URL, so it is left out.
            return NotifierError(f"{service}: invalid request ({type(exc).__name__})", permanent=True)
    return NotifierError(f"{service}: {type(exc).__name__}")


# The HTTP status of the last answer `request` got in this task: the dispatcher's delivery
# log records it for every notifier without each send() having to return it.
_last_status: ContextVar[int | None] = ContextVar("probefleet_notifier_status", default=None)


def start_attempt() -> None:
    """Forget the status of an earlier attempt (call before send, in the sending task)."""
    _last_status.set(None)


def last_status() -> int | None:
    """The HTTP status the service answered in this task's last request, if it answered."""
    return _last_status.get()


class Reply(msgspec.Struct):
    status: int
    headers: Mapping[str, str]
    body: str


async def request(
    session: aiohttp.ClientSession,
    service: str,
    url: str,
    *,
    method: str = "POST",
    data: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    raise_for_status: bool = True,
) -> Reply:
    """Send one request; raise NotifierError unless the service answered 2xx.

    The session's timeout applies: the dispatcher decides how long a delivery may take.
    With `raise_for_status=False` only transport errors raise, for services whose error
    bodies say more than their status codes.
    """
    all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
    try:
        async with session.request(
            method, url, data=data, headers=all_headers, allow_redirects=False
        ) as resp:
            _last_status.set(resp.status)
            body = await resp.text(errors="replace")
            reply = Reply(resp.status, resp.headers, body)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise error_for_exception(service, exc) from None
    if not raise_for_status:
        return reply
    error = error_for_status(service, reply.status, body, retry_after(reply.headers.get("Retry-After")))
    if error is not None:
        raise error
    return reply


async def post_json(
    session: aiohttp.ClientSession,
    service: str,
    url: str,
    payload: Any,
    headers: Mapping[str, str] | None = None,
    raise_for_status: bool = True,
) -> Reply:
    body = msgspec.json.encode(payload)
    return await request(
        session,
        service,
        url,
        data=body,
        headers={"Content-Type": "application/json", **(headers or {})},
        raise_for_status=raise_for_status,
    )
