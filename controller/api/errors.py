"""The one error envelope: {"error": {"code", "message", "details"}}, never a 500 page."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from probefleet.controller.validation import ValidationError

log = logging.getLogger("probefleet.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


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


def _nul_in_url(request: web.Request) -> ApiError | None:
    """PostgreSQL text cannot hold NUL: refused here for every path and query parameter
    (JSON bodies: common.read_json)."""
    if "\x00" in request.path:
        return ApiError(404, "not_found", "no such endpoint")
    if bad := sorted({k for k, v in request.query.items() if "\x00" in k or "\x00" in v}):
        details: dict[str, object] = {
            k.replace("\x00", "\\u0000"): "must not contain NUL (\\u0000)" for k in bad
        }
        return ApiError(422, "validation_error", "Validation failed", details)
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if (refused := _nul_in_url(request)) is not None:
        return error_response(refused)
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e)
    except ValidationError as e:
        return error_response(ApiError(422, "validation_error", e.message, e.details))
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
