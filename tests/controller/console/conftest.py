"""Console users and logged-in browser-like clients (cookie jar, CSRF token from the page)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from probefleet.controller import keys
from probefleet.controller.console import accounts
from tests.controller.conftest import Running

PASSWORD = "correct horse battery"


@dataclass
class Browser:
    http: aiohttp.ClientSession
    csrf: str


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)"', html)
    assert found, html[:500]
    return found.group(1)


async def log_in(controller: Running, username: str, password: str = PASSWORD) -> Browser:
    """A client logged in through the form, as a browser does (login token cookie and field)."""
    http = aiohttp.ClientSession(base_url=controller.base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    form = await (await http.get("/login")).text()
    token = re.search(r'name="login_token" value="([^"]+)"', form)
    assert token, form[:500]
    r = await http.post(
        "/login",
        data={"username": username, "password": password, "login_token": token.group(1), "next": "/"},
        allow_redirects=False,
    )
    assert r.status == 303, await r.text()
    page = await (await http.get("/")).text()
    return Browser(http, csrf_of(page))


@pytest.fixture
async def users(controller: Running) -> AsyncIterator[Callable[[str, str], Awaitable[Browser]]]:
    """make(username, role): a new user of that role, logged in."""
    opened: list[Browser] = []

    async def make(username: str, role: str) -> Browser:
        await accounts.create_user(controller.app[keys.POOL], username, PASSWORD, role)
        browser = await log_in(controller, username)
        opened.append(browser)
        return browser

    yield make
    for b in opened:
        await b.http.close()
