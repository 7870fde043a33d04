"""The typed Python client of the probefleet API: `Client` (synchronous) and
`AsyncClient` (asyncio), decoding answers into the same msgspec types the server's OpenAPI
document is generated from (`probefleet.client.models`). See docs/sdk.md."""

from probefleet.client._core import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    TransportError,
    ValidationError,
)
from probefleet.client.aio import AsyncClient
from probefleet.client.sync import Client

__all__ = [
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "TransportError",
    "ValidationError",
]
