"""The one error envelope: {"error": {"code", "message", "details"}}, never a 500 page."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

log = logging.getLogger("probefleet.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
S = TypeVar("S", bound=msgspec.Struct)


class ApiError(Exception):
    """An error the client can act on; rendered as the JSON envelope."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class ValidationFailed(ApiError):
    """422 with one message per field path (dots and [i] for list items)."""

    def __init__(self, details: dict[str, object], message: str = "Validation failed") -> None:
        super().__init__(422, "validation_error", message, details)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def from_msgspec(err: msgspec.ValidationError, prefix: str = "") -> ValidationFailed:
    """msgspec says 'Expected `int`, got `str` - at `$.timeout`': map it to a field path."""
    text = str(err)
    path = ""
    if " - at `$" in text:
        text, _, path = text.rpartition(" - at `$")
        path = path.rstrip("`").lstrip(".")
    for start, message in (
        ("Object missing required field `", "required field"),
        ("Object contains unknown field `", "unknown field"),
    ):
        if text.startswith(start):
            name = text.split("`")[1]
            path = f"{path}.{name}" if path else name
            text = message
    field = ".".join(p for p in (prefix, path) if p) or "body"
    return ValidationFailed({field: text})


def convert(data: dict[str, Any], struct: type[S]) -> S:
    """`data` as `struct`: unknown fields and wrong values are a 422 naming each field."""
    if unknown := sorted(set(data) - set(struct.__struct_fields__)):
        raise ValidationFailed({k: "unknown field" for k in unknown})
    try:
        return msgspec.convert(data, struct)
    except msgspec.ValidationError as e:
        raise from_msgspec(e) from None


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def error_response(err: ApiError) -> web.Response:
    body = {"error": {"code": err.code, "message": err.message, "details": err.details}}
    return web.Response(
        body=msgspec.json.encode(body),
        status=err.status,
        content_type="application/json",
        headers=err.headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = _STATUS_CODES.get(e.status, "error")
        message = e.reason if e.status != 404 else "no such endpoint"
        allow = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        return error_response(ApiError(e.status, code, message, headers=allow))
    except Exception:
        log.exception("unhandled error path=%s", request.path)
        return error_response(ApiError(500, "internal_error", "internal error"))
