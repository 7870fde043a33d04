"""Passwords, access cookies and their secret shared by every controller, and the
per-address limiter of anonymous subscribe requests."""

from __future__ import annotations

import aiohttp

from probefleet.controller import keys
from probefleet.controller.status_pages import access
from tests.controller.conftest import start_controller
from tests.controller.status_pages.helpers import create_page


def test_passwords_are_scrypt_and_cookies_expire() -> None:
    stored = access.hash_password("open sesame")
    assert stored.startswith("scrypt$") and "open sesame" not in stored
    assert access.check_password("open sesame", stored) and not access.check_password("open sesamE", stored)
    assert not access.check_password("anything", None)
    cookie = access.sign_access("k", 1, stored, now=1000.0)
    assert access.access_ok("k", 1, stored, cookie, now=1001.0)
    assert not access.access_ok("k", 2, stored, cookie, now=1001.0)
    assert not access.access_ok("k", 1, stored, cookie, now=1000.0 + access.COOKIE_TTL + 1)
    assert not access.access_ok("k", 1, access.hash_password("new one!"), cookie, now=1001.0)


def test_the_address_limiter_refills_over_time() -> None:
    limiter = access.AddressLimiter(burst=2, every=10)
    assert [limiter.take("a", now=0.0) for _ in range(3)] == [0, 0, 10]
    assert limiter.take("b", now=0.0) == 0
    assert limiter.take("a", now=5.0) == 5 and limiter.take("a", now=10.0) == 0
    assert access.source_key("2001:db8::1") == access.source_key("2001:db8::2") == "2001:db8::/64"
    assert access.source_key("::ffff:10.0.0.1") == "10.0.0.1"


def test_password_attempts_refill_over_the_window_per_address_and_per_page() -> None:
    limiter = access.UnlockLimiter(per_address=2, per_page=3, window=60)
    assert [limiter.take("slug:a", "1.1.1.1", now=0) for _ in range(3)] == [0, 0, 30]
    # A refused attempt spends nothing of the page's budget: one left for another address.
    assert limiter.take("slug:a", "2.2.2.2", now=0) == 0
    assert limiter.take("slug:a", "3.3.3.3", now=0) == 20
    assert limiter.take("slug:b", "1.1.1.1", now=0) == 0
    assert limiter.take("slug:a", "1.1.1.1", now=30) == 0


async def test_a_cookie_from_one_controller_opens_the_page_on_another(database: str, nats_url: str) -> None:
    first = await start_controller(database, nats_url)
    second = await start_controller(database, nats_url)
    try:
        assert first.app[keys.STATUS_PAGES].secret == second.app[keys.STATUS_PAGES].secret
        headers = {"Authorization": f"Bearer {first.admin_key}"}
        async with aiohttp.ClientSession(base_url=first.base, headers=headers) as api:
            await create_page(api, name="Shared Corp", slug="shared", is_public=False, password="open sesame")
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(base_url=first.base, cookie_jar=jar) as one:
            r = await one.post("/status/shared", data={"password": "open sesame"}, allow_redirects=False)
            assert r.status == 303
        cookie = {c.key: c.value for c in jar}
        assert set(cookie) == {"pf_status_shared"}
        async with aiohttp.ClientSession(base_url=second.base, cookies=cookie) as two:
            r = await two.get("/status/shared")
            assert r.status == 200 and "Shared Corp" in await r.text()
        async with aiohttp.ClientSession(base_url=second.base) as nobody:
            assert (await nobody.get("/status/shared")).status == 401
    finally:
        await second.stop()
        await first.stop()
    assert await access.cookie_secret(None, "configured") == "configured"
