"""Users, sessions, CSRF, roles and the login limits, through the real controller."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable

import aiohttp

from probefleet.controller import keys
from probefleet.controller.console import accounts
from probefleet.controller.status_pages import access
from tests.controller.conftest import Running
from tests.controller.console.conftest import PASSWORD, Browser, log_in

Make = Callable[[str, str], Awaitable[Browser]]
MONITOR = {"name": "m", "type": "http", "url": "http://127.0.0.1:9/"}


async def test_it_stores_only_an_argon2_hash_and_logs_in_with_the_password(controller: Running) -> None:
    pool = controller.app[keys.POOL]
    user = await accounts.create_user(pool, "alice", PASSWORD, "admin")
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", user["id"])
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    browser = await log_in(controller, "ALICE")  # names compare case-insensitively
    try:
        cookie = next(c for c in browser.http.cookie_jar if c.key == accounts.COOKIE)
        assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
        ids = await pool.fetch("SELECT id_hash FROM sessions")
        assert [r["id_hash"] for r in ids] == [accounts.digest(cookie.value)]
    finally:
        await browser.http.close()


async def test_a_session_calls_the_api_and_state_changes_need_the_csrf_token(users: Make) -> None:
    editor = await users("ed", "editor")
    r = await editor.http.get("/api/v1/monitors")
    assert r.status == 200
    r = await editor.http.post("/api/v1/monitors", json=MONITOR)
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_failed"
    r = await editor.http.post("/api/v1/monitors", json=MONITOR, headers={"X-CSRF-Token": "wrong"})
    assert r.status == 403
    r = await editor.http.post("/api/v1/monitors", json=MONITOR, headers={"X-CSRF-Token": editor.csrf})
    assert r.status == 201, await r.text()


async def test_roles_map_onto_scopes(users: Make) -> None:
    viewer = await users("vi", "viewer")
    editor = await users("ed", "editor")
    headers = {"X-CSRF-Token": viewer.csrf}
    assert (await viewer.http.get("/api/v1/monitors")).status == 200
    r = await viewer.http.post("/api/v1/monitors", json=MONITOR, headers=headers)
    assert r.status == 403 and (await r.json())["error"]["details"] == {"required_scope": "monitors:write"}
    r = await editor.http.get("/api/v1/users")
    assert r.status == 403
    r = await editor.http.get("/api/v1/api-keys")
    assert r.status == 403


async def test_an_admin_manages_users_through_the_api_and_the_audit_log_names_who(
    controller: Running, api: aiohttp.ClientSession, users: Make
) -> None:
    r = await api.post("/api/v1/users", json={"username": "bob", "password": "short", "role": "boss"})
    assert r.status == 422
    details = (await r.json())["error"]["details"]
    assert set(details) == {"password", "role"}
    r = await api.post("/api/v1/users", json={"username": "bob", "password": PASSWORD, "role": "viewer"})
    assert r.status == 201
    bob = (await r.json())["data"]
    assert "password" not in str(bob) and bob["role"] == "viewer"
    r = await api.post("/api/v1/users", json={"username": "BOB", "password": PASSWORD})
    assert r.status == 422 and (await r.json())["error"]["details"] == {"username": "already taken"}
    admin = await users("root", "admin")
    r = await admin.http.patch(
        f"/api/v1/users/{bob['id']}", json={"role": "editor"}, headers={"X-CSRF-Token": admin.csrf}
    )
    assert r.status == 200 and (await r.json())["data"]["role"] == "editor"
    r = await api.get("/api/v1/audit")
    entries = (await r.json())["data"]
    actors = [(e["actor"], e["method"], e["path"]) for e in entries]
    assert ("user:root", "PATCH", f"/api/v1/users/{bob['id']}") in actors
    assert (f"key:{controller.admin_key[:12]}", "POST", "/api/v1/users") in actors
    assert all(e["status"] < 400 for e in entries)


async def test_the_last_admin_cannot_be_demoted_or_deleted(
    controller: Running, api: aiohttp.ClientSession
) -> None:
    r = await api.post("/api/v1/users", json={"username": "only", "password": PASSWORD, "role": "admin"})
    only = (await r.json())["data"]
    r = await api.patch(f"/api/v1/users/{only['id']}", json={"role": "viewer"})
    assert r.status == 409
    assert (await api.delete(f"/api/v1/users/{only['id']}")).status == 409


async def test_disabling_a_user_ends_their_sessions(api: aiohttp.ClientSession, users: Make) -> None:
    viewer = await users("gone", "viewer")
    assert (await viewer.http.get("/api/v1/monitors")).status == 200
    listed = (await (await api.get("/api/v1/users")).json())["data"]
    user_id = next(u["id"] for u in listed if u["username"] == "gone")
    assert (await api.patch(f"/api/v1/users/{user_id}", json={"disabled": True})).status == 200
    r = await viewer.http.get("/api/v1/monitors")
    assert r.status == 401
    r = await viewer.http.get("/", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"].startswith("/login")


async def test_logout_needs_the_token_and_ends_the_session(users: Make) -> None:
    browser = await users("out", "viewer")
    r = await browser.http.post("/logout", data={}, allow_redirects=False)
    assert r.status == 403
    r = await browser.http.post("/logout", data={"csrf": browser.csrf}, allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/login"
    assert (await browser.http.get("/api/v1/monitors")).status == 401


async def test_an_expired_session_is_refused(controller: Running, users: Make) -> None:
    idle, old = await users("late", "viewer"), await users("old", "viewer")
    pool = controller.app[keys.POOL]
    by_user = "FROM users u WHERE u.id = sessions.user_id AND u.username = $1"
    # Unused for longer than SESSION_IDLE.
    await pool.execute(f"UPDATE sessions SET expires_at = now() - interval '1 second' {by_user}", "late")
    # In use, but logged in longer than SESSION_MAX ago.
    await pool.execute(f"UPDATE sessions SET created_at = now() - interval '8 days' {by_user}", "old")
    for browser in (idle, old):
        assert (await browser.http.get("/api/v1/monitors")).status == 401
        r = await browser.http.get("/", allow_redirects=False)
        assert r.status == 303 and r.headers["Location"].startswith("/login"), r.headers


async def test_login_is_limited_per_account_and_per_address(controller: Running) -> None:
    await accounts.create_user(controller.app[keys.POOL], "target", PASSWORD, "viewer")
    limiter = controller.app[accounts.LIMITER]
    # Smaller budgets than the defaults (10 and 30), so the test makes fewer argon2 checks;
    # the defaults are back for the next test.
    limiter.per_account, limiter.per_address = 3, 5
    limiter.__post_init__()
    try:
        await _limited(controller, limiter)
    finally:
        limiter.per_account, limiter.per_address = (
            accounts.LoginLimiter.per_account,
            accounts.LoginLimiter.per_address,
        )
        limiter.__post_init__()


async def _limited(controller: Running, limiter: accounts.LoginLimiter) -> None:
    async with aiohttp.ClientSession(
        base_url=controller.base, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as http:

        async def attempt(username: str, password: str) -> aiohttp.ClientResponse:
            form = await (await http.get("/login")).text()
            token = re.search(r'name="login_token" value="([^"]+)"', form)
            assert token
            data = {"username": username, "password": password, "login_token": token.group(1)}
            # No trusted proxies here: a spoofed X-Forwarded-For changes nothing.
            spoofed = {"X-Forwarded-For": "203.0.113.9"}
            return await http.post("/login", data=data, headers=spoofed, allow_redirects=False)

        for _ in range(limiter.per_account):
            r = await attempt("target", "wrong password")
            assert r.status == 401 and "Wrong user name or password" in await r.text()
        r = await attempt("target", PASSWORD)  # even the right password waits now
        assert r.status == 429 and int(r.headers["Retry-After"]) > 0
        # Other names from the same address still have the address's budget left.
        r = await attempt("someone-else", "wrong password")
        assert r.status == 401
    assert set(limiter.addresses.buckets) == {"127.0.0.1"}
    limiter.addresses.buckets.clear()
    limiter.accounts.buckets.clear()
    for _ in range(limiter.per_address):
        limiter.failed("x", "127.0.0.1")
    assert limiter.blocked("fresh-name", "127.0.0.1") > 0
    assert limiter.blocked("fresh-name", "127.0.0.2") == 0


def test_the_client_address_is_read_from_trusted_proxies_only() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")]
    # An untrusted peer: its header, whatever it says, is ignored.
    assert access.client_address("198.51.100.1", ["10.0.0.1, 1.2.3.4"], trusted) == "198.51.100.1"
    assert access.client_address("10.0.0.5", [], trusted) == "10.0.0.5"
    # Through two trusted proxies: the right-most untrusted entry; what the client put in
    # front of it (a spoofed 1.2.3.4) is not believed.
    assert access.client_address("10.0.0.5", ["1.2.3.4, 203.0.113.9", "10.0.0.9"], trusted) == "203.0.113.9"
    assert access.client_address("::1", ["2001:db8::7"], trusted) == "2001:db8::7"
    # An unreadable entry ends the walk at the last address a trusted proxy gave.
    assert access.client_address("10.0.0.5", ["203.0.113.9, junk, 10.0.0.7"], trusted) == "10.0.0.7"
    assert access.client_address("10.0.0.5", ["10.0.0.8"], trusted) == "10.0.0.8"  # all trusted
    assert access.client_address("10.0.0.5", ["1.2.3.4"], []) == "10.0.0.5"  # none trusted


async def test_a_login_form_without_its_token_is_refused(controller: Running) -> None:
    await accounts.create_user(controller.app[keys.POOL], "t", PASSWORD, "viewer")
    async with aiohttp.ClientSession(base_url=controller.base) as http:
        r = await http.post("/login", data={"username": "t", "password": PASSWORD}, allow_redirects=False)
        assert r.status == 403
        assert accounts.COOKIE not in r.cookies


async def test_next_never_leaves_the_site(controller: Running) -> None:
    await accounts.create_user(controller.app[keys.POOL], "n", PASSWORD, "viewer")
    async with aiohttp.ClientSession(
        base_url=controller.base, cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as http:
        form = await (await http.get("/login?next=//evil.example/")).text()
        token = re.search(r'name="login_token" value="([^"]+)"', form)
        assert token and 'name="next" value="/"' in form
        data = {
            "username": "n",
            "password": PASSWORD,
            "login_token": token.group(1),
            "next": "https://evil.example/",
        }
        r = await http.post("/login", data=data, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/"


async def test_events_written_for_a_request_name_its_caller(
    controller: Running, api: aiohttp.ClientSession, users: Make
) -> None:
    pool = controller.app[keys.POOL]
    r = await api.post("/api/v1/monitors", json={**MONITOR, "check_interval": 3600})
    monitor_id = (await r.json())["data"]["id"]
    r = await api.post("/api/v1/incidents", json={"monitor_id": monitor_id, "title": "by hand"})
    assert r.status == 201, await r.text()
    incident_id = (await r.json())["data"]["id"]
    editor = await users("ed", "editor")
    r = await editor.http.patch(
        f"/api/v1/incidents/{incident_id}",
        json={"status": "acknowledged"},
        headers={"X-CSRF-Token": editor.csrf},
    )
    assert r.status == 200, await r.text()
    rows = await pool.fetch("SELECT kind, actor FROM events WHERE incident_id = $1 ORDER BY id", incident_id)
    assert [(x["kind"], x["actor"]) for x in rows] == [
        ("incident.opened", f"key:{controller.admin_key[:12]}"),
        ("incident.acknowledged", "user:ed"),
    ]
    page = await (await editor.http.get(f"/console/incidents/{incident_id}")).text()
    assert 'incident.acknowledged</strong> by <span class="actor">user:ed' in page
