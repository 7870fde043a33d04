"""Enrollment tokens, /api/v1/enroll and probe revocation (fleet:admin), against a real
controller and PostgreSQL; NATS without the fleet's auth here (the trust's side, with a real
operator-mode server, is in tests/test_enrollment.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from probefleet.controller import keys
from probefleet.controller.storage import api_keys
from probefleet.controller.storage import fleet as store
from probefleet.shared import natscreds
from tests.controller.conftest import Running


def public_key() -> str:
    return natscreds.new_user_keypair()[1]


async def new_token(api: aiohttp.ClientSession, region: str = "eu-west", **body: Any) -> dict[str, Any]:
    r = await api.post(f"/api/v1/regions/{region}/enrollment-tokens", json=body)
    assert r.status == 201, await r.text()
    data: dict[str, Any] = (await r.json())["data"]
    return data


async def enroll(controller: Running, token: str, **body: Any) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.post("/api/v1/enroll", json={"token": token, "public_key": public_key(), **body})
        await r.read()
        return r


async def test_it_creates_a_token_shown_once_and_lists_it_without_the_secret(
    controller: Running, api: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    made = await new_token(api, expires_in=600, max_uses=2)
    token = made["token"]
    assert token.startswith("pfe_") and made["prefix"] == token[:12]
    assert made["state"] == "active" and made["uses"] == 0 and made["max_uses"] == 2
    assert made["region"] == "eu-west"
    r = await api.get("/api/v1/regions/eu-west/enrollment-tokens")
    text = await r.text()
    assert r.status == 200 and token not in text and token[12:20] not in text
    listed = (await r.json())["data"]
    assert [t["id"] for t in listed] == [made["id"]] and "token" not in listed[0]
    assert (await api.get("/api/v1/regions/us-east/enrollment-tokens")).status == 200
    assert ((await (await api.get("/api/v1/regions/us-east/enrollment-tokens")).json())["data"]) == []
    # Enrolling and failing to enroll with it logs neither the token nor its secret part.
    assert (await enroll(controller, token, host="h1")).status == 201
    assert (await enroll(controller, token + "x")).status == 401
    assert token[12:] not in caplog.text and token not in caplog.text


async def test_it_refuses_bad_token_requests_with_field_details(api: aiohttp.ClientSession) -> None:
    for body, field in (
        ({"expires_in": 10}, "expires_in"),
        ({"expires_in": 10**9}, "expires_in"),
        ({"max_uses": 0}, "max_uses"),
        ({"max_uses": "two"}, "max_uses"),
        ({"uses": 3}, "uses"),
    ):
        r = await api.post("/api/v1/regions/eu-west/enrollment-tokens", json=body)
        assert r.status == 422, (body, await r.text())
        assert field in (await r.json())["error"]["details"], body
    r = await api.post("/api/v1/regions/nowhere/enrollment-tokens", json={})
    assert r.status == 404
    assert (await api.get("/api/v1/regions/nowhere/enrollment-tokens")).status == 404
    assert (await api.delete("/api/v1/regions/eu-west/enrollment-tokens/99")).status == 404
    assert (await api.delete("/api/v1/regions/eu-west/enrollment-tokens/x")).status == 404


async def test_it_enrolls_a_probe_and_counts_the_use(controller: Running, api: aiohttp.ClientSession) -> None:
    made = await new_token(api, max_uses=1)
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        key = public_key()
        # The token as a Bearer header works as well as in the body.
        r = await anon.post(
            "/api/v1/enroll",
            json={"public_key": key, "host": "probe-1.example", "version": "0.4.0"},
            headers={"Authorization": f"Bearer {made['token']}"},
        )
        assert r.status == 201, await r.text()
        got = (await r.json())["data"]
    assert got["region"] == "eu-west" and got["probe_id"].startswith("eu-west-")
    assert got["jwt"] is None and got["ca_pem"] is None
    assert got["nats_urls"] and all("@" not in u for u in got["nats_urls"])
    cred = await store.get_credential(controller.app[keys.POOL], got["probe_id"])
    assert cred is not None and cred["public_key"] == key and cred["host"] == "probe-1.example"
    listed = (await (await api.get("/api/v1/regions/eu-west/enrollment-tokens")).json())["data"]
    assert listed[0]["uses"] == 1 and listed[0]["state"] == "used_up"
    # Enrolled but not connected: listed among the region's probes, credential active.
    probes = (await (await api.get("/api/v1/regions/eu-west/probes")).json())["data"]
    assert [(p["probe_id"], p["live"], p["credential"], p["host"]) for p in probes] == [
        (got["probe_id"], False, "active", "probe-1.example")
    ]


async def test_it_refuses_unknown_expired_used_up_and_revoked_tokens_with_401(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    pool = controller.app[keys.POOL]
    used = await new_token(api, max_uses=1)
    assert (await enroll(controller, used["token"])).status == 201
    expired = await new_token(api)
    await pool.execute(
        "UPDATE enrollment_tokens SET expires_at = now() - interval '1 s' WHERE id = $1", expired["id"]
    )
    revoked = await new_token(api)
    assert (await api.delete(f"/api/v1/regions/eu-west/enrollment-tokens/{revoked['id']}")).status == 204
    # Revoking twice is fine; under another region's path it is not found.
    assert (await api.delete(f"/api/v1/regions/eu-west/enrollment-tokens/{revoked['id']}")).status == 204
    assert (await api.delete(f"/api/v1/regions/us-east/enrollment-tokens/{revoked['id']}")).status == 404
    before = await pool.fetchval("SELECT count(*) FROM probe_credentials")
    for token, words in (
        ("pfe_" + "A" * 43, "unknown"),
        (used["token"][:12] + "B" * 31, "unknown"),
        ("not-a-token", "unknown"),
        (used["token"], "used up"),
        (expired["token"], "expired"),
        (revoked["token"], "revoked"),
    ):
        r = await enroll(controller, token)
        assert r.status == 401, token
        error = (await r.json())["error"]
        assert words in error["message"], (token, error)
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.post("/api/v1/enroll", json={"public_key": public_key()})
        assert r.status == 401 and "missing enrollment token" in (await r.json())["error"]["message"]
    # Nothing half-created: no credential, and the refused uses were not counted.
    assert await pool.fetchval("SELECT count(*) FROM probe_credentials") == before
    states = {t["id"]: t["uses"] for t in await store.list_tokens(pool, "eu-west")}
    assert states[expired["id"]] == 0 and states[revoked["id"]] == 0
    listed = (await (await api.get("/api/v1/regions/eu-west/enrollment-tokens")).json())["data"]
    assert {t["id"]: t["state"] for t in listed} == {
        used["id"]: "used_up",
        expired["id"]: "expired",
        revoked["id"]: "revoked",
    }


async def test_it_validates_the_enrollment_body(controller: Running, api: aiohttp.ClientSession) -> None:
    made = await new_token(api)
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        for body, field in (
            ({"public_key": "not-a-key"}, "public_key"),
            ({"public_key": "A" * 56}, "public_key"),
            ({}, "public_key"),
            ({"public_key": public_key(), "probe_id": "has.dot"}, "probe_id"),
            ({"public_key": public_key(), "probe_id": "x" * 65}, "probe_id"),
            ({"public_key": public_key(), "extra": 1}, "extra"),
            ({"public_key": public_key(), "host": "a\nforged log line"}, "host"),
            ({"public_key": public_key(), "version": "1\x1b[31m"}, "version"),
        ):
            r = await anon.post("/api/v1/enroll", json={"token": made["token"], **body})
            assert r.status == 422, (body, await r.text())
            assert field in (await r.json())["error"]["details"], body
    # Refused bodies spent no use of the token.
    assert (await store.list_tokens(controller.app[keys.POOL], "eu-west"))[0]["uses"] == 0


async def test_exactly_max_uses_concurrent_enrollments_succeed(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    made = await new_token(api, max_uses=3)
    answers = await asyncio.gather(*(enroll(controller, made["token"]) for _ in range(12)))
    assert sorted(r.status for r in answers) == [201] * 3 + [401] * 9
    pool = controller.app[keys.POOL]
    assert await pool.fetchval("SELECT count(*) FROM probe_credentials WHERE region = 'eu-west'") == 3
    assert (await store.list_tokens(pool, "eu-west"))[0]["uses"] == 3


async def test_it_re_enrolls_under_the_same_id_and_refuses_the_old_key(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    made = await new_token(api)
    first = public_key()
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.post("/api/v1/enroll", json={"token": made["token"], "public_key": first})
        probe_id = (await r.json())["data"]["probe_id"]
        second = public_key()
        body = {"token": made["token"], "public_key": second, "probe_id": probe_id}
        r = await anon.post("/api/v1/enroll", json=body)
        assert r.status == 201 and (await r.json())["data"]["probe_id"] == probe_id
        pool = controller.app[keys.POOL]
        assert set(await store.revoked_keys(pool)) == {first}
        # The replaced key can never enroll again; a key another probe holds is refused too.
        r = await anon.post("/api/v1/enroll", json={"token": made["token"], "public_key": first})
        assert r.status == 409 and "revoked" in (await r.json())["error"]["message"]
        r = await anon.post("/api/v1/enroll", json={"token": made["token"], "public_key": second})
        assert r.status == 409
        # An id enrolled in another region is not taken over by a token of this one.
        other = await new_token(api, "us-east")
        body = {"token": other["token"], "public_key": public_key(), "probe_id": probe_id}
        r = await anon.post("/api/v1/enroll", json=body)
        assert r.status == 409 and "eu-west" in (await r.json())["error"]["message"]
    cred = await store.get_credential(pool, probe_id)
    assert cred is not None and cred["public_key"] == second and cred["region"] == "eu-west"


async def test_it_revokes_a_probe(controller: Running, api: aiohttp.ClientSession) -> None:
    made = await new_token(api)
    key = public_key()
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        r = await anon.post("/api/v1/enroll", json={"token": made["token"], "public_key": key})
        probe_id = (await r.json())["data"]["probe_id"]
    assert (await api.delete(f"/api/v1/probes/{probe_id}")).status == 204
    pool = controller.app[keys.POOL]
    cred = await store.get_credential(pool, probe_id)
    assert cred is not None and cred["revoked_at"] is not None
    revoked = await store.revoked_keys(pool)
    assert revoked[key] > cred["revoked_at"].timestamp()
    # Idempotent; an unknown probe is a 404.
    assert (await api.delete(f"/api/v1/probes/{probe_id}")).status == 204
    assert await store.revoked_keys(pool) == revoked
    assert (await api.delete("/api/v1/probes/nobody")).status == 404
    # A revoked probe no longer holds the region: it can be deleted now.
    assert (await api.delete("/api/v1/regions/eu-west")).status == 204


async def test_fleet_admin_is_its_own_scope(controller: Running) -> None:
    pool = controller.app[keys.POOL]
    plain, _ = await api_keys.create(pool, "keys", ["keys:admin", "monitors:read"])
    fleet, _ = await api_keys.create(pool, "fleet", ["fleet:admin"])
    async with aiohttp.ClientSession(
        base_url=controller.base, headers={"Authorization": f"Bearer {plain}"}
    ) as ka:
        r = await ka.post("/api/v1/regions/eu-west/enrollment-tokens", json={})
        assert r.status == 403 and (await r.json())["error"]["details"] == {"required_scope": "fleet:admin"}
        assert (await ka.delete("/api/v1/probes/x")).status == 403
        assert (await ka.post("/api/v1/regions", json={"name": "x"})).status == 403
        assert (await ka.get("/api/v1/regions/eu-west/probes")).status == 403
        # keys:admin cannot hand out fleet:admin either.
        assert (
            await ka.post("/api/v1/api-keys", json={"name": "f", "scopes": ["fleet:admin"]})
        ).status == 403
    async with aiohttp.ClientSession(
        base_url=controller.base, headers={"Authorization": f"Bearer {fleet}"}
    ) as fa:
        assert (await fa.post("/api/v1/regions/eu-west/enrollment-tokens", json={})).status == 201
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        assert (await anon.get("/api/v1/regions/eu-west/enrollment-tokens")).status == 401


async def test_enrollment_is_rate_limited_per_address(controller: Running) -> None:
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        statuses = []
        for _ in range(40):
            r = await anon.post("/api/v1/enroll", json={"token": "pfe_nope", "public_key": public_key()})
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                break
    assert statuses[:30] == [401] * 30 and statuses[-1] == 429
