"""Enrollment and revocation: /api/v1/regions/{name}/enrollment-tokens (fleet:admin),
/api/v1/enroll (anonymous: the token is the credential) and DELETE /api/v1/probes/{probe_id}.

Enrollment runs in one transaction: the token's use is counted under a row lock (so
exactly `max_uses` concurrent enrollments succeed), the credential is stored and the user
JWT signed (FleetTrust.issue_probe); any refusal rolls all of it back. A revoke marks the
credential, then pushes the full revocation list from the database to NATS
(FleetTrust.push_revocations), which closes the probe's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from aiohttp import web
from msgspec import Meta

from probefleet.controller import keys
from probefleet.controller.api.common import bearer, now_utc, ok, parse_int, read_json, require
from probefleet.controller.api.errors import ApiError, not_found
from probefleet.controller.status_pages.access import AddressLimiter, source_key
from probefleet.controller.storage import fleet as store
from probefleet.controller.validation import ValidationError, convert

log = logging.getLogger("probefleet.fleet")

# Enrollment requests per source address: a burst big enough for a region's probes behind
# one NAT coming up together, then one every 2 s. Refused tokens cost the same.
ENROLL_LIMITER = web.AppKey("enroll_limiter", AddressLimiter)
MAX_EXPIRES_IN = 30 * 86400
PUBLIC_KEY_PATTERN = "^U[A-Z2-7]{55}$"
# Probe ids are NATS subject tokens too (the probe's inbox prefix).
PROBE_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# No control characters: host and version go into logs and tables.
PRINTABLE = "^[^\\x00-\\x1f\\x7f]*$"


class TokenCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /regions/{name}/enrollment-tokens body: lifetime in seconds (at most 30 days),
    and how many probes may enroll with it (null: any number until it expires)."""

    expires_in: Annotated[int, Meta(ge=60, le=MAX_EXPIRES_IN)] = 3600
    max_uses: Annotated[int, Meta(ge=1, le=100_000)] | None = None


class EnrollmentToken(msgspec.Struct, kw_only=True):
    """A token as listed: never the token or its hash; `prefix` is its first characters."""

    id: int
    region: str
    prefix: str
    state: Literal["active", "expired", "used_up", "revoked"]
    expires_at: dt.datetime
    max_uses: int | None
    uses: int
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class EnrollmentTokenCreated(EnrollmentToken, kw_only=True):
    token: str  # shown only in the create response


class EnrollRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """POST /enroll body. The token here or as `Authorization: Bearer`; `public_key` is the
    probe's own NATS user nkey (its seed never leaves the probe); `probe_id` to enroll again
    under an id already held (its old key stops working)."""

    token: str | None = None
    public_key: Annotated[str, Meta(pattern=PUBLIC_KEY_PATTERN)]
    host: Annotated[str, Meta(max_length=253, pattern=PRINTABLE)] = ""
    version: Annotated[str, Meta(max_length=64, pattern=PRINTABLE)] = ""
    probe_id: Annotated[str, Meta(pattern=PROBE_ID_PATTERN)] | None = None


class Enrollment(msgspec.Struct, kw_only=True):
    """What a probe needs to join: its id and region, its user JWT (null when this
    controller runs NATS without the fleet's auth), the NATS URLs to connect to, and the CA
    certificate (PEM) of the NATS servers when they use a private CA."""

    probe_id: str
    region: str
    jwt: str | None
    nats_urls: list[str]
    ca_pem: str | None


def _token_state(row: dict[str, Any], now: dt.datetime) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] <= now:
        return "expired"
    if row["max_uses"] is not None and row["uses"] >= row["max_uses"]:
        return "used_up"
    return "active"


def _public_token(row: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    fields = {f: row[f] for f in EnrollmentToken.__struct_fields__ if f != "state"}
    return {**fields, "state": _token_state(row, now)}


def _body(raw: object, struct: type[Any]) -> Any:
    if not isinstance(raw, dict):
        raise ValidationError({"body": "must be a JSON object"})
    return convert(raw, struct)


async def _region(request: web.Request) -> str:
    name = request.match_info["name"]
    if await store.get_region(request.app[keys.POOL], name) is None:
        raise not_found("region")
    return name


async def create_token(request: web.Request) -> web.Response:
    """Create an enrollment token for the region (the token is shown only here)."""
    await require(request, "fleet:admin")
    req: TokenCreate = _body(await read_json(request), TokenCreate)
    now = now_utc()
    made = await store.create_token(
        request.app[keys.POOL],
        request.match_info["name"],
        now + dt.timedelta(seconds=req.expires_in),
        req.max_uses,
    )
    if made is None:
        raise not_found("region")
    token, row = made
    log.info("enrollment token created region=%s prefix=%s", row["region"], row["prefix"])
    return ok({**_public_token(row, now), "token": token}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    """The region's enrollment tokens, without the secrets."""
    await require(request, "fleet:admin")
    rows = await store.list_tokens(request.app[keys.POOL], await _region(request))
    now = now_utc()
    return ok([_public_token(r, now) for r in rows], meta={"count": len(rows)})


async def revoke_token(request: web.Request) -> web.Response:
    """Revoke an enrollment token: it enrolls no more probes (enrolled ones keep theirs)."""
    await require(request, "fleet:admin")
    token_id = parse_int(request.match_info["id"])
    if token_id is None or not await store.revoke_token(
        request.app[keys.POOL], request.match_info["name"], token_id
    ):
        raise not_found("enrollment token")
    return web.Response(status=204)


def _throttle(request: web.Request) -> None:
    wait = request.app[ENROLL_LIMITER].take(source_key(request.remote))
    if wait:
        raise ApiError(
            429,
            "rate_limited",
            f"too many enrollment requests from this address; retry after {wait} s",
            {"retry_after": wait},
            headers={"Retry-After": str(wait)},
        )


def _refused(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _nats_urls(app: web.Application) -> tuple[list[str], str | None]:
    trust = app.get(keys.TRUST)
    if trust is not None:
        return list(trust.nats_urls), trust.ca_pem
    # NATS without the fleet's auth (tests, an explicit insecure mode): the controller's own
    # URL, never with credentials in it.
    urls = []
    for url in app[keys.CONFIG].nats_url.split(","):
        parts = urlsplit(url.strip())
        urls.append(parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl())
    return urls, None


async def enroll(request: web.Request) -> web.Response:
    """Exchange an enrollment token for the probe's credential (anonymous)."""
    _throttle(request)
    raw = await read_json(request)
    req: EnrollRequest = _body(raw, EnrollRequest)
    token = req.token or bearer(request)
    if not token:
        raise _refused("missing enrollment token: send it as `token` or Authorization: Bearer")
    trust = request.app.get(keys.TRUST)
    pool, now = request.app[keys.POOL], now_utc()
    async with pool.acquire() as conn, conn.transaction():
        spent = await store.spend_token(conn, token, now)
        if isinstance(spent, store.TokenRefusal):
            raise _refused(spent.value)
        region = spent["region"]
        if await store.key_revoked(conn, req.public_key):
            raise ApiError(
                409,
                "conflict",
                "this public key was revoked; generate a new key pair",
                {"public_key": "revoked"},
            )
        holder = await store.credential_by_key(conn, req.public_key)
        if holder is not None and holder["probe_id"] != req.probe_id:
            raise ApiError(409, "conflict", "another probe holds this public key", {"public_key": "in use"})
        probe_id = req.probe_id or f"{region}-{secrets.token_hex(5)}"
        current = await store.get_credential(conn, probe_id)
        if current is not None and current["region"] != region:
            raise ApiError(
                409,
                "conflict",
                f"probe {probe_id!r} is enrolled in region {current['region']!r}, not {region!r}",
                {"probe_id": "enrolled in another region"},
            )
        await store.save_credential(
            conn,
            probe_id=probe_id,
            region=region,
            public_key=req.public_key,
            host=req.host,
            version=req.version,
            token_id=spent["id"],
        )
        try:
            jwt = (
                trust.issue_probe(public_key=req.public_key, probe_id=probe_id, region=region)
                if trust
                else None
            )
        except ValueError as e:
            raise ValidationError({"public_key": str(e).removeprefix("public_key: ")}) from None
        replaced = current is not None and current["public_key"] != req.public_key
    if replaced:
        # The id's old key is on the revocation list now: NATS must refuse it. Should NATS
        # not take it now, the enrollment stands and sync_revocations pushes it later.
        try:
            await push_revocations(request.app)
        except Exception as e:
            log.warning("revocation push failed probe_id=%s error=%s", probe_id, e)
    urls, ca_pem = _nats_urls(request.app)
    log.info("probe enrolled probe_id=%s region=%s host=%s", probe_id, region, req.host)
    body = Enrollment(probe_id=probe_id, region=region, jwt=jwt, nats_urls=urls, ca_pem=ca_pem)
    return ok(msgspec.to_builtins(body), status=201)


async def push_revocations(app: web.Application) -> None:
    """Give NATS the full list of revoked keys, rebuilt from the database (idempotent, so
    two controllers pushing at once cannot undo each other)."""
    trust = app.get(keys.TRUST)
    if trust is None:
        return
    revoked = await store.revoked_keys(app[keys.POOL])
    await trust.push_revocations(revoked)
    app[PUSHED].revoked = revoked


@dataclass
class Pushed:
    """The revocation list this controller last had NATS take (None: none yet)."""

    revoked: dict[str, int] | None = None


PUSHED = web.AppKey("revocations_pushed", Pushed)
# How often a controller compares the database's revocation list with the one it last
# pushed, and pushes again when they differ: a revoke whose push failed (NATS down, the
# client got a 503) reaches NATS within this, and so does one made while this controller
# was down.
SYNC_EVERY = 10.0


async def sync_revocations(app: web.Application) -> bool:
    """Push the revocation list when it differs from the one this controller last pushed
    (an empty list is not pushed until something was revoked). True when it pushed."""
    trust = app.get(keys.TRUST)
    if trust is None:
        return False
    revoked = await store.revoked_keys(app[keys.POOL])
    if revoked == app[PUSHED].revoked or (not revoked and app[PUSHED].revoked is None):
        return False
    await trust.push_revocations(revoked)
    app[PUSHED].revoked = revoked
    log.info("revocations pushed keys=%d", len(revoked))
    return True


async def revocations_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: keep NATS' revocation list equal to the database's (sync_revocations
    at start and every SYNC_EVERY seconds)."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                await sync_revocations(app)
            except Exception as e:
                log.warning("revocation sync failed error=%s", e)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SYNC_EVERY)

    task = asyncio.create_task(loop(), name="revocations")
    yield
    stop.set()
    await asyncio.gather(task, return_exceptions=True)


async def revoke_probe(request: web.Request) -> web.Response:
    """Revoke a probe's credential: NATS closes its connection and refuses it from then on."""
    await require(request, "fleet:admin")
    probe_id = request.match_info["probe_id"]
    async with request.app[keys.POOL].acquire() as conn, conn.transaction():
        row = await store.revoke_probe(conn, probe_id)
    if row is None:
        raise not_found("probe")
    try:
        await push_revocations(request.app)
    except Exception as e:
        log.warning("revocation push failed probe_id=%s error=%s", probe_id, e)
        raise ApiError(
            503,
            "unavailable",
            "the probe is marked revoked, but NATS did not take the revocation yet; retry the request",
            headers={"Retry-After": "1"},
        ) from None
    log.info("probe revoked probe_id=%s region=%s", probe_id, row["region"])
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    """Give the app its enrollment limiter and revocation state (call in build_app)."""
    app[ENROLL_LIMITER] = AddressLimiter(burst=30, every=2.0)
    app[PUSHED] = Pushed()
