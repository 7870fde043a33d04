"""Incident posts: a post, its updates and the page-level banner, each written in one
transaction with its outbox event (`status_page.post.created` / `.updated`, which the live
page and API clients receive) and its notice to each confirmed subscriber of the page (a
delivery of the notification dispatcher, see status_pages/subscribers.py).

`post_out` is the one shape of a post, for the API, the public page and the events.
"""

from __future__ import annotations

from typing import Any

from probefleet.controller.storage import Tx
from probefleet.controller.storage import events as event_store
from probefleet.controller.storage import notifications as notices_store
from probefleet.controller.storage import status_pages as store


def post_out(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": p["id"],
        "title": p["title"],
        "status": p["status"],
        "created_at": p["created_at"],
        "updated_at": p["updated_at"],
        "resolved_at": p["resolved_at"],
        "updates": [
            {"id": u["id"], "status": u["status"], "message": u["message"], "created_at": u["created_at"]}
            for u in p["updates"]
        ],
    }


def page_incident(page: dict[str, Any]) -> dict[str, Any] | None:
    """The page-level incident banner of the public model."""
    if page["incident_status"] is None:
        return None
    updated = page["incident_updated_at"]
    return {
        "status": page["incident_status"],
        "message": page["incident_message"],
        "updated_at": updated.isoformat().replace("+00:00", "Z") if updated else None,
    }


def post_payload(page: dict[str, Any], post: dict[str, Any]) -> dict[str, Any]:
    """The outbox payload of a post event: the page, the whole post (its newest update
    first) and the page's banner. `post` and `banner` are exactly what the public page
    shows; `status_page` is for API clients only, never sent to visitors."""
    return {
        "status_page": {"id": page["id"], "name": page["name"], "slug": page["slug"]},
        "post": post_out(post),
        "banner": page_incident(page),
    }


async def emit_post(conn: Tx, page_id: int, post_id: int, *, created: bool) -> int:
    """Write `status_page.post.created` (or `.updated`: a new update) into the events outbox;
    its id. Call in the transaction that wrote the post."""
    kind = "status_page.post.created" if created else "status_page.post.updated"
    page = await store.get_page(conn, page_id)
    found = await store.posts(conn, page_id, post_id=post_id)
    assert page is not None and found, "call after writing the post, in the same transaction"
    post = found[0]
    return await event_store.insert(
        conn,
        kind,
        monitor_id=None,
        incident_id=None,
        occurred_at=post["updated_at"],
        payload=post_payload(page, post),
    )


async def publish(conn: Tx, page_id: int, title: str, status: str, message: str) -> int:
    """A new post with its first update; its id. Call in a transaction."""
    post_id = await store.insert_post(conn, page_id, title, status, message)
    event_id = await emit_post(conn, page_id, post_id, created=True)
    notice = {"post_id": post_id, "status": status, "message": message, "title": title}
    await notices_store.insert_page_notices(conn, page_id, event_id, "post", notice)
    return post_id


async def update(conn: Tx, page_id: int, post_id: int, status: str, message: str) -> None:
    """A further update of the page's post. Call in a transaction."""
    await store.add_update(conn, post_id, status, message)
    event_id = await emit_post(conn, page_id, post_id, created=False)
    notice = {"post_id": post_id, "status": status, "message": message}
    await notices_store.insert_page_notices(conn, page_id, event_id, "post", notice)


async def set_banner(conn: Tx, page_id: int, status: str, message: str) -> None:
    """The page-level incident (`incident_status` and `incident_message` of a page body): the
    banner, and an update of the open post (or a new post titled by the message). Call in a
    transaction."""
    await store.set_incident(conn, page_id, status, message)
    post_id = await store.open_post(conn, page_id)
    if post_id is None:
        title = message if len(message) <= 80 else message[:77] + "..."
        post_id = await store.insert_post(conn, page_id, title, status, message)
        event_id = await emit_post(conn, page_id, post_id, created=True)
    else:
        await store.add_update(conn, post_id, status, message)
        event_id = await emit_post(conn, page_id, post_id, created=False)
    notice = {"post_id": post_id, "status": status, "message": message}
    await notices_store.insert_page_notices(conn, page_id, event_id, "post", notice)
