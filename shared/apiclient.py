"""A small synchronous client of the controller's REST API, for command-line tools (the
`probefleet region` commands, a probe's enrollment) on hosts that have only the probe's
dependencies: the standard library's HTTP client, JSON through msgspec.

Every failure is an `ApiClientError` whose message a person can read: the controller's own
error message for a refused request (with its status), or why the controller could not be
reached. Keys and tokens are sent, never put into a message.
"""

from __future__ import annotations

import http.client
import ipaddress
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from probefleet.shared.version import VERSION

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiClientError(Exception):
    """A request did not succeed. `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details or {}


def is_loopback(url: str) -> bool:
    """Whether the URL's host is a loopback address or `localhost`."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http: bool = False) -> str:
    """The URL without a trailing slash; ValueError unless it is http(s) with a host, and
    https unless it is loopback or `allow_http`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if parts.scheme == "http" and not (allow_http or is_loopback(url)):
        raise ValueError(f"{url} is not https: credentials must not cross the network in the clear")
    return url.rstrip("/")


@dataclass
class ApiClient:
    """Requests to `base_url` with `api_key` (Bearer) when given."""

    base_url: str = DEFAULT_URL
    api_key: str | None = None
    timeout: float = 30.0
    ca_file: Path | None = None
    _context: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if self.base_url.startswith("https://"):
            self._context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def request(
        self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> Any:
        """The answer's JSON document (None for 204); ApiClientError otherwise."""
        sent = {"Accept": "application/json", "User-Agent": f"probefleet/{VERSION}", **(headers or {})}
        if self.api_key:
            sent.setdefault("Authorization", f"Bearer {self.api_key}")
        data = None
        if body is not None:
            data = msgspec.json.encode(body)
            sent["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base_url + path, data=data, headers=sent, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._context) as answer:
                raw = answer.read()
                return msgspec.json.decode(raw) if raw else None
        except urllib.error.HTTPError as e:
            raise _refused(e) from None
        except urllib.error.URLError as e:
            reason = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else e.reason
            raise ApiClientError(f"cannot reach the controller at {self.base_url}: {reason}") from None
        except (OSError, http.client.HTTPException) as e:
            raise ApiClientError(f"cannot reach the controller at {self.base_url}: {e}") from None
        except msgspec.DecodeError:
            not_json = f"{self.base_url} did not answer with JSON: is it a probefleet controller?"
            raise ApiClientError(not_json) from None

    def data(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        """The `data` member of the answer's envelope."""
        doc = self.request(method, path, body, **kw)
        return doc.get("data") if isinstance(doc, dict) else doc


def _refused(e: urllib.error.HTTPError) -> ApiClientError:
    with e:
        raw = e.read()
    try:
        error = msgspec.json.decode(raw).get("error", {})
        message, details = str(error["message"]), error.get("details") or {}
    except (msgspec.DecodeError, AttributeError, KeyError, TypeError):
        message, details = (e.reason or "request refused"), {}
    if details and isinstance(details, dict):
        message += " (" + "; ".join(f"{k}: {v}" for k, v in details.items()) + ")"
    return ApiClientError(f"HTTP {e.code}: {message}", status=e.code, details=details)
