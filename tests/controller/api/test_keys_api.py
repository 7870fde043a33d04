"""/api/v1/api-keys: create once-shown keys, list without secrets, revoke at once; scopes."""

from __future__ import annotations

import aiohttp

from tests.controller.conftest import Running


def session(controller: Running, key: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(base_url=controller.base, headers={"Authorization": f"Bearer {key}"})


async def test_it_shows_the_full_key_once_and_lists_only_prefixes(api: aiohttp.ClientSession) -> None:
    r = await api.post("/api/v1/api-keys", json={"name": "ci", "scopes": ["monitors:read"]})
    assert r.status == 201
    created = (await r.json())["data"]
    assert created["key"].startswith("pf_") and created["key"].startswith(created["prefix"])
    assert created["scopes"] == ["monitors:read"] and created["last_used_at"] is None
    r = await api.get("/api/v1/api-keys")
    text = await r.text()
    assert created["key"] not in text and "hash" not in text
    listed = {k["id"]: k for k in (await r.json())["data"]}
    assert set(listed[created["id"]]) >= {"prefix", "scopes", "created_at", "last_used_at"}
    assert "key" not in listed[created["id"]]


async def test_it_authenticates_with_a_new_key_and_records_last_use(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    r = await api.post("/api/v1/api-keys", json={"name": "ro", "scopes": ["monitors:read"]})
    key = (await r.json())["data"]["key"]
    async with aiohttp.ClientSession(base_url=controller.base, headers={"X-API-Key": key}) as ro:
        assert (await ro.get("/api/v1/monitors")).status == 200
        r = await ro.post("/api/v1/monitors", json={"name": "x", "url": "http://127.0.0.1/"})
        assert r.status == 403 and (await r.json())["error"]["details"]["required_scope"] == "monitors:write"
        assert (await ro.get("/api/v1/api-keys")).status == 403
    listed = (await (await api.get("/api/v1/api-keys")).json())["data"]
    assert next(k for k in listed if k["name"] == "ro")["last_used_at"] is not None


async def test_it_revokes_at_once(controller: Running, api: aiohttp.ClientSession) -> None:
    r = await api.post("/api/v1/api-keys", json={"name": "tmp", "scopes": ["admin"]})
    created = (await r.json())["data"]
    async with session(controller, created["key"]) as tmp:
        assert (await tmp.get("/api/v1/monitors")).status == 200
        assert (await api.delete(f"/api/v1/api-keys/{created['id']}")).status == 204
        r = await tmp.get("/api/v1/monitors")
        assert r.status == 401 and (await r.json())["error"]["code"] == "unauthorized"
    assert (await api.delete(f"/api/v1/api-keys/{created['id']}")).status == 404
    r = await api.delete("/api/v1/api-keys/abc")
    assert r.status == 404 and (await r.json())["error"]["message"] == "API key not found"
    ids = [k["id"] for k in (await (await api.get("/api/v1/api-keys")).json())["data"]]
    assert created["id"] not in ids


async def test_it_rejects_expired_keys(controller: Running, api: aiohttp.ClientSession) -> None:
    from probefleet.controller import keys
    from probefleet.controller.storage import api_keys

    r = await api.post("/api/v1/api-keys", json={"name": "soon", "scopes": ["admin"], "expiresInDays": 1})
    created = (await r.json())["data"]
    assert created["expires_at"] is not None
    await controller.app[keys.POOL].execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 s' WHERE id = $1", created["id"]
    )
    async with session(controller, created["key"]) as old:
        assert (await old.get("/api/v1/monitors")).status == 401
    assert await api_keys.count(controller.app[keys.POOL]) >= 1


async def test_it_validates_new_keys(api: aiohttp.ClientSession) -> None:
    cases = [
        ({"scopes": ["admin"]}, "name"),
        ({"name": "x", "scopes": ["root"]}, "scopes[0]"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x", "colour": 1}, "colour"),
    ]
    for body, field in cases:
        r = await api.post("/api/v1/api-keys", json=body)
        assert r.status == 422, body
        assert field in (await r.json())["error"]["details"], body


async def test_only_keys_admin_manages_keys(controller: Running, api: aiohttp.ClientSession) -> None:
    r = await api.post("/api/v1/api-keys", json={"name": "k", "scopes": ["keys:admin"]})
    key = (await r.json())["data"]["key"]
    async with session(controller, key) as ka:
        assert (await ka.get("/api/v1/api-keys")).status == 200
        assert (await ka.get("/api/v1/monitors")).status == 403
    async with aiohttp.ClientSession(base_url=controller.base) as anon:
        assert (await anon.get("/api/v1/api-keys")).status == 401


async def test_a_key_grants_only_scopes_it_holds(controller: Running, api: aiohttp.ClientSession) -> None:
    r = await api.post("/api/v1/api-keys", json={"name": "k", "scopes": ["keys:admin", "monitors:read"]})
    key = (await r.json())["data"]["key"]
    async with session(controller, key) as ka:
        for scopes in (["admin"], ["monitors:read", "monitors:write", "incidents:read"]):
            r = await ka.post("/api/v1/api-keys", json={"name": "up", "scopes": scopes})
            error = (await r.json())["error"]
            assert r.status == 403 and error["code"] == "forbidden", scopes
            missing = sorted(set(scopes) - {"keys:admin", "monitors:read"})
            assert error["details"]["scopes"] == missing and all(s in error["message"] for s in missing)
        same = {"name": "same", "scopes": ["monitors:read", "keys:admin"]}
        r = await ka.post("/api/v1/api-keys", json=same)
        assert r.status == 201
    names = {k["name"] for k in (await (await api.get("/api/v1/api-keys")).json())["data"]}
    assert "same" in names and "up" not in names


async def test_only_an_admin_key_revokes_an_admin_key(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    ids = {}
    for name, scopes in (("boss", ["admin"]), ("ka", ["keys:admin"]), ("ro", ["monitors:read"])):
        r = await api.post("/api/v1/api-keys", json={"name": name, "scopes": scopes})
        ids[name] = (await r.json())["data"]
    async with session(controller, ids["ka"]["key"]) as ka:
        r = await ka.delete(f"/api/v1/api-keys/{ids['boss']['id']}")
        assert r.status == 403 and (await r.json())["error"]["details"]["required_scope"] == "admin"
        async with session(controller, ids["boss"]["key"]) as boss:
            assert (await boss.get("/api/v1/monitors")).status == 200
        assert (await ka.delete(f"/api/v1/api-keys/{ids['ro']['id']}")).status == 204
    assert (await api.delete(f"/api/v1/api-keys/{ids['boss']['id']}")).status == 204


async def test_it_lists_only_active_keys(controller: Running, api: aiohttp.ClientSession) -> None:
    from probefleet.controller import keys

    body = {"name": "gone", "scopes": ["monitors:read"], "expiresInDays": 1}
    r = await api.post("/api/v1/api-keys", json=body)
    created = (await r.json())["data"]
    await controller.app[keys.POOL].execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 s' WHERE id = $1", created["id"]
    )
    body = await (await api.get("/api/v1/api-keys")).json()
    assert created["id"] not in [k["id"] for k in body["data"]] and body["meta"]["count"] == len(body["data"])


async def test_it_refuses_expiry_times_out_of_range(api: aiohttp.ClientSession) -> None:
    for when in ("9999-12-31T23:00:00-05:00", "9500-01-01T00:00:00Z"):
        r = await api.post("/api/v1/api-keys", json={"name": "far", "expires_at": when})
        assert r.status == 422 and "expires_at" in (await r.json())["error"]["details"], when
