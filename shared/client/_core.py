"""What the sync and async clients share: settings from arguments or the environment,
building a request, reading an answer into a typed value or a typed error, and when to
retry. No I/O here; each client only sends the bytes."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import msgspec

from probefleet.client import models
from probefleet.shared.version import VERSION

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
# A 429 is retried this many times, each after the server's Retry-After (capped, so a
# wrong header cannot stall a script for an hour).
MAX_RETRIES = 3
MAX_WAIT = 60.0


class ApiError(Exception):
    """The server refused the request. `details` names each bad field with what is wrong
    with it (for a 422: `{"url": "required field"}`); `code` is the error's stable name."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class BadRequestError(ApiError):
    """400 or 413: the body or a parameter could not be read."""


class AuthenticationError(ApiError):
    """401: no key, or a key that is not valid (revoked, expired, mistyped)."""


class PermissionDeniedError(ApiError):
    """403: the key lacks the scope the operation needs."""


class NotFoundError(ApiError):
    """404."""


class ConflictError(ApiError):
    """409: the resource's state does not allow it (already resolved, in use, ...)."""


class ValidationError(ApiError):
    """422: invalid fields, each named in `details`."""


class RateLimitError(ApiError):
    """429 after every retry; `retry_after` is the server's last advice in seconds."""

    retry_after: float = 0.0


class ServerError(ApiError):
    """5xx."""


class TransportError(Exception):
    """The server could not be reached, or answered something that is not the API."""


ERRORS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    422: ValidationError,
    429: RateLimitError,
}


@dataclass(frozen=True)
class Settings:
    base_url: str
    api_key: str | None
    timeout: float
    max_retries: int

    @classmethod
    def resolve(cls, base_url: str | None, api_key: str | None, timeout: float, max_retries: int) -> Settings:
        """Arguments first, then PROBEFLEET_URL and PROBEFLEET_API_KEY."""
        url = base_url or os.environ.get("PROBEFLEET_URL") or DEFAULT_URL
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        key = api_key or os.environ.get("PROBEFLEET_API_KEY") or None
        return cls(url.rstrip("/"), key, timeout, max_retries)

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"Settings(base_url={self.base_url!r}, api_key={'<redacted>' if self.api_key else None})"


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


def build(settings: Settings, method: str, path: str, params: Mapping[str, Any] | None, json: Any) -> Request:
    headers = {"Accept": "application/json", "User-Agent": f"probefleet-client/{VERSION}"}
    if settings.api_key:
        headers["Authorization"] = f"Bearer {settings.api_key}"
    query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
    url = settings.base_url + path + (f"?{urlencode(query)}" if query else "")
    body = None
    if json is not None:
        body = msgspec.json.encode(json)
        headers["Content-Type"] = "application/json"
    return Request(method.upper(), url, headers, body)


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def retry_wait(status: int, headers: Mapping[str, str], attempt: int, settings: Settings) -> float | None:
    """Seconds to wait before retrying, or None when the answer is final: only a 429 is
    retried, after its Retry-After (1 s when missing)."""
    if status != 429 or attempt >= settings.max_retries:
        return None
    try:
        wait = float(headers.get("Retry-After", "1"))
    except ValueError:
        wait = 1.0
    return min(max(wait, 0.0), MAX_WAIT)


class Envelope(msgspec.Struct, kw_only=True):
    data: msgspec.Raw = msgspec.Raw(b"")  # empty: no `data` key
    meta: models.Meta | None = None


def decode(
    status: int, headers: Mapping[str, str], body: bytes, type_: type[T]
) -> tuple[T, models.Meta | None]:
    """The answer's `data` as `type_` and its `meta`; the typed error for a 4xx/5xx."""
    if status >= 400:
        raise error(status, headers, body)
    if status == 204 or type_ is type(None):
        return None, None  # type: ignore[return-value]
    try:
        envelope = msgspec.json.decode(body, type=Envelope)
        if not envelope.data:  # /health answers its object bare
            return msgspec.json.decode(body, type=type_), None
        return msgspec.json.decode(envelope.data, type=type_), envelope.meta
    except msgspec.DecodeError as e:
        raise TransportError(f"the answer is not the API's JSON: {e}") from None


def error(status: int, headers: Mapping[str, str], body: bytes) -> ApiError:
    cls = ERRORS.get(status, ServerError if status >= 500 else ApiError)
    try:
        e = msgspec.json.decode(body, type=models.Error).error
        out = cls(status, e.code, e.message, e.details)
    except msgspec.DecodeError:
        out = cls(status, "http_error", body[:200].decode(errors="replace") or f"HTTP {status}")
    if isinstance(out, RateLimitError):
        try:
            out.retry_after = float(headers.get("Retry-After", "0"))
        except ValueError:
            out.retry_after = 0.0
    return out
