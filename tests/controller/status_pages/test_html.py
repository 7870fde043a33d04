"""controller/status_pages/html.py and templates/: the public page, its posts and banner,
the archive, the Atom feed, the locked page, messages and badges, rendered from plain
dicts. User text (names, titles, messages, footer, a request path) must come out as text,
never as markup."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

import pytest

from probefleet.controller.status_pages import html

EVIL = "<script>alert(1)</script><img src=x onerror=\"alert('2')\">&amp;"


class Parsed(HTMLParser):
    """Elements (tag, attributes) and text of a document, character references decoded."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def tags(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.elements if tag == name]

    def first(self, name: str, **wanted: str) -> dict[str, str | None]:
        return next(a for a in self.tags(name) if all(a.get(k) == v for k, v in wanted.items()))


def day(date: str, uptime: float | None, state: str) -> dict[str, Any]:
    return {"date": date, "uptime": uptime, "state": state}


def component(cid: int, name: str, status: str, uptime: float | None = 99.5) -> dict[str, Any]:
    return {
        "id": cid,
        "name": name,
        "status": status,
        "uptime_90d": uptime,
        "days": [day("2024-05-01", 100.0, "operational"), day("2024-05-02", None, "none")],
    }


def post(
    title: str = "Slow API", message: str = "Looking into it", status: str = "investigating"
) -> dict[str, Any]:
    return {
        "id": 7,
        "title": title,
        "status": status,
        "updates": [{"status": status, "message": message, "created_at": "2024-05-02T10:30:00Z"}],
    }


def model(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "Acme",
        "description": "Our services",
        "status": "partial_outage",
        "incident": None,
        "sections": [
            {
                "name": "Core",
                "components": [component(1, "API", "operational"), component(2, "DB", "outage")],
            },
            {"name": "", "components": [component(3, "Docs", "unknown", uptime=None)]},
        ],
        "posts": [],
        "maintenance": [],
    }
    return {**base, **over}


def render(m: dict[str, Any], notice: str = "") -> str:
    return html.render_page(m, slug="acme", last_event_id=42, notice=notice)


def page(m: dict[str, Any], notice: str = "") -> Parsed:
    return Parsed(render(m, notice))


OURS = ({"src": "/status-assets/theme.js"}, {"src": "/status-assets/status.js", "defer": None})


def assert_no_injected_markup(doc: Parsed) -> None:
    """No element or attribute of the user's text: scripts are ours, no image, no handler."""
    assert all(s in OURS for s in doc.tags("script"))
    assert doc.tags("img") == []
    assert not [name for _, attrs in doc.elements for name in attrs if name.startswith("on")]


def test_it_shows_the_overall_state_and_every_component_with_its_state_and_uptime() -> None:
    doc = page(model())
    assert doc.first("section", id="overall")["data-state"] == "partial_outage"
    assert "Partial outage" in doc.text and "Acme" in doc.text and "Our services" in doc.text
    states = {a["data-component"]: a["data-state"] for a in doc.tags("li") if "data-component" in a}
    assert states == {"1": "operational", "2": "outage", "3": "unknown"}
    for label in ("Operational", "Outage", "No data"):
        assert label in doc.text
    assert "99.50% uptime" in doc.text and "no data yet" in doc.text
    # a section without a name has no heading: Core's and the incidents' only
    assert render(model()).count("<h2>") == 2 and "<h2>Core</h2>" in render(model())
    body = doc.tags("body")[0]
    assert (body["data-events"], body["data-last-event"]) == ("/status/acme/events", "42")


def test_it_draws_one_bar_per_day_with_its_uptime_or_no_data() -> None:
    doc = page(model(sections=[{"name": "", "components": [component(1, "API", "operational")]}]))
    bars = [(a["class"], a["title"]) for a in doc.tags("i")]
    assert bars == [("bo", "2024-05-01: 100.0%"), ("bn", "2024-05-02: no data")]


def test_it_renders_user_text_as_text_never_as_markup() -> None:
    m = model(
        name=EVIL,
        description=EVIL,
        sections=[{"name": EVIL, "components": [component(1, EVIL, "degraded")]}],
        posts=[post(title=EVIL, message=EVIL, status=EVIL)],
        incident={"status": EVIL, "message": EVIL},
        maintenance=[{"name": EVIL, "starts_at": "2024-05-03T01:00:00Z", "ends_at": "2024-05-03T02:00:00Z"}],
    )
    doc = page(m, notice=EVIL)
    assert_no_injected_markup(doc)
    assert doc.tags("script") == list(OURS)
    # name (title and h1), description, section, component, post title and status, the
    # update's message, banner message, maintenance, notice; statuses shown title-cased
    assert doc.text.count(EVIL) == 11
    assert doc.text.count(EVIL.title()) == 2  # the update's and the banner's status
    assert doc.first("article")["data-status"] == EVIL
    assert doc.first("section", id="banner")["data-status"] == EVIL


def test_it_says_so_when_no_incident_was_posted() -> None:
    assert "No incidents reported recently." in page(model()).text
    doc = page(model(posts=[post()]))
    assert "No incidents reported recently." not in doc.text
    assert "Slow API" in doc.text and "Looking into it" in doc.text


def test_it_renders_a_post_with_its_updates_newest_first_as_given() -> None:
    p = post()
    p["updates"] = [
        {"status": "monitoring", "message": "fix deployed", "created_at": "2024-05-02T11:00:00Z"},
        {"status": "investigating", "message": "slow", "created_at": "2024-05-02T10:30:00Z"},
    ]
    doc = Parsed(html.post(p))
    assert doc.first("article") == {"class": "post", "id": "p-7", "data-status": "investigating"}
    text = doc.text
    assert (
        text.index("Monitoring")
        < text.index("fix deployed")
        < text.index("Investigating")
        < text.index("slow")
    )
    # the time with its zone for readers without script; the exact instant for status.js
    assert "2 May 2024, 11:00 UTC" in text and "2024-05-02T11:00" not in text
    assert [t["datetime"] for t in doc.tags("time")] == ["2024-05-02T11:00:00Z", "2024-05-02T10:30:00Z"]


@pytest.mark.parametrize(
    "incident",
    [None, {"status": "resolved", "message": "all good"}],
    ids=["no-incident", "resolved"],
)
def test_it_shows_no_banner_without_an_open_incident(incident: dict[str, Any] | None) -> None:
    assert html.banner(incident) == ""
    assert not [a for a in page(model(incident=incident)).tags("section") if a.get("id") == "banner"]


def test_it_shows_an_open_incident_in_the_banner() -> None:
    doc = page(model(incident={"status": "identified", "message": "Payments fail"}))
    assert doc.first("section", id="banner")["data-status"] == "identified"
    assert "Identified" in doc.text and "Payments fail" in doc.text


def test_it_lists_scheduled_maintenance_with_the_zone_named() -> None:
    windows = [{"name": "DB upgrade", "starts_at": "2024-05-03T01:00:00Z", "ends_at": "2024-05-03T02:30:00Z"}]
    text = page(model(maintenance=windows)).text
    assert "Scheduled maintenance" in text
    assert "DB upgrade: 3 May 2024, 01:00 UTC to 3 May 2024, 02:30 UTC" in text
    assert "Scheduled maintenance" not in page(model()).text


def test_it_links_the_json_badge_and_subscribe_form_of_its_slug() -> None:
    doc = page(model())
    assert doc.first("form")["action"] == "/status/acme/subscribe"
    assert {a["href"] for a in doc.tags("a")} == {
        "/api/v1/status-pages/acme/public",
        "/status/acme/badge.svg",
        "/status/acme/feed.atom",
        "/status/acme/history",
    }
    assert doc.first("link", rel="alternate")["type"] == "application/atom+xml"
    # one box per component, to subscribe to some only
    assert [a["value"] for a in doc.tags("input") if a.get("name") == "components"] == ["1", "2", "3"]


@pytest.mark.parametrize("wrong", [False, True], ids=["asked", "wrong-password"])
def test_it_renders_the_locked_page_with_the_path_as_text(wrong: bool) -> None:
    action = '/status/x"><script>alert(1)</script>'
    doc = Parsed(html.render_locked(action, wrong=wrong))
    assert_no_injected_markup(doc)
    assert doc.first("form")["action"] == action
    assert ("Wrong password." in doc.text) is wrong
    assert "private or does not exist" in doc.text


def test_it_renders_a_message_as_text() -> None:
    doc = Parsed(html.render_message(EVIL, EVIL))
    assert_no_injected_markup(doc)
    assert doc.chunks.count(EVIL) == 3  # <title>, <h1> and the paragraph


def test_it_draws_a_badge_with_escaped_text_a_state_colour_and_a_width_for_the_text() -> None:
    svg = html.badge(EVIL, "up", "operational")
    doc = Parsed(svg)
    assert_no_injected_markup(doc)
    assert [a["fill"] for a in doc.tags("rect")] == ["#555", "#2da44e"]
    assert doc.first("svg")["aria-label"] == f"{EVIL}: up"
    short, long = (
        Parsed(html.badge("status", "up", "outage")),
        Parsed(html.badge("status", "operational", "x")),
    )
    assert int(str(long.first("svg")["width"])) > int(str(short.first("svg")["width"]))
    assert short.tags("rect")[1]["fill"] == "#cf222e"
    assert long.tags("rect")[1]["fill"] == "#8c959f"  # an unknown state is grey


@pytest.mark.parametrize(
    ("name", "title"),
    [("Acme", "Acme status"), ("Acme Status", "Acme Status"), ("status.acme.io", "status.acme.io")],
    ids=["plain", "says-status", "host-name"],
)
def test_it_titles_the_page_without_saying_status_twice(name: str, title: str) -> None:
    assert html.page_title(name) == title
    assert f"<title>{title}</title>" in render(model(name=name))


def test_it_shows_each_components_response_time_only_when_the_page_does() -> None:
    assert 'class="rt"' not in render(model())
    timed = component(1, "API", "operational") | {"response_time_ms": 123.456}
    silent = component(2, "DB", "operational") | {"response_time_ms": None}
    text = render(model(sections=[{"name": "", "components": [timed, silent]}]))
    assert re.findall(r'<span class="rt" title="([^"]*)">([^<]*)</span>', text) == [
        ("Mean response time over the last 24 hours", "123 ms"),
        ("Mean response time over the last 24 hours", "no data"),
    ]


def test_it_applies_the_pages_look_with_its_text_escaped() -> None:
    row = {
        "slug": "acme",
        "logo_version": "abc",
        "colors": {"accent": "#123456", "outage": "#ff0000"},
        "custom_css": ".name { letter-spacing: 1px }",
        "footer_text": EVIL,
        "theme": "dark",
    }
    text = html.render_page(model(), slug="acme", last_event_id=1, appearance=html.look(row))
    doc = Parsed(text)
    assert doc.tags("img") == [{"class": "logo", "src": "/status/acme/logo?v=abc", "alt": ""}]
    assert doc.tags("script") == list(OURS)
    assert not [name for _, attrs in doc.elements for name in attrs if name.startswith("on")]
    assert doc.first("html")["data-theme"] == "dark"
    sheets = [a["href"] for a in doc.tags("link") if a.get("rel") == "stylesheet"]
    assert sheets == ["/status-assets/status.css", f"/status/acme/theme.css?v={html.theme_version(row)}"]
    assert EVIL in doc.text
    css = html.theme_css(row)
    assert "--accent: #123456;" in css and "--bad: #ff0000;" in css and css.endswith(row["custom_css"])
    # no look: no logo, no page stylesheet, the visitor's or the system's theme
    plain = page(model())
    assert "data-theme" not in plain.first("html") and plain.tags("img") == []
    assert html.theme_css({"colors": {}, "custom_css": ""}) == ""


def test_it_renders_the_archive_with_links_to_newer_and_older_pages() -> None:
    doc = Parsed(html.render_history(EVIL, [post(title=EVIL)], slug="acme", number=2, pages=3))
    assert_no_injected_markup(doc)
    links = {a.get("rel"): a["href"] for a in doc.tags("a") if a.get("rel")}
    assert links == {"prev": "/status/acme/history?page=1", "next": "/status/acme/history?page=3"}
    assert "Page 2 of 3" in doc.text and EVIL in doc.text
    first = Parsed(html.render_history("Acme", [], slug="acme", number=1, pages=1))
    assert not [a for a in first.tags("a") if a.get("rel")] and "No incidents reported." in first.text


ATOM = "{http://www.w3.org/2005/Atom}"


def test_it_writes_a_well_formed_atom_feed_with_markup_as_text() -> None:
    p = post(title=EVIL, message=EVIL) | {
        "created_at": "2024-05-02T10:30:00.000000Z",
        "updated_at": "2024-05-02T11:00:00.000000Z",
    }
    updated = dt.datetime(2024, 5, 2, 11, tzinfo=dt.UTC)
    feed = ET.fromstring(
        html.render_feed(EVIL, EVIL, [p], base="https://status.example.com/", slug="acme", updated=updated)
    )
    assert feed.tag == f"{ATOM}feed"
    assert feed.findtext(f"{ATOM}title") == f"{EVIL} status"
    assert feed.findtext(f"{ATOM}updated") == "2024-05-02T11:00:00Z"
    assert feed.findtext(f"{ATOM}id") == "tag:status.example.com,2024:status-page:acme"
    assert feed.find(f"{ATOM}author/{ATOM}name") is not None
    (entry,) = feed.findall(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}title") == f"{EVIL} (investigating)"
    assert entry.findtext(f"{ATOM}published") == "2024-05-02T10:30:00Z"
    link = entry.find(f"{ATOM}link")
    assert link is not None and link.get("href") == "https://status.example.com/status/acme/history#p-7"
    content = entry.find(f"{ATOM}content")
    assert content is not None and content.get("type") == "html"
    # the content is the post's HTML, in which the user's text is escaped once more
    assert_no_injected_markup(Parsed(content.text or ""))
    assert EVIL in Parsed(content.text or "").text
