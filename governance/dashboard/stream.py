"""The dashboard's live stream: Server-Sent Events for the htmx SSE extension.

``GET /dashboard/<slug>/stream?after=<seq>[&feed=1]`` polls the tenant's chain head every
``DASHBOARD_POLL_SECONDS``. When it moved past the stream's cursor, the stream sends

- ``record``: the new calls (outcome records) as feed rows, newest first, when ``feed=1``;
- ``approvals``: the navigation bar's pending badge, when an approval record is among them
  (the approvals page also refreshes its queue on it).

Each event's id is the head it was read at, so a reconnecting EventSource (``Last-Event-ID``)
resumes where it left off. A comment goes out every ``DASHBOARD_STREAM_KEEPALIVE_SECONDS``
(15), and the stream ends after ``DASHBOARD_STREAM_MAX_SECONDS`` (600); the browser then
reconnects. Membership is checked at open, and again (with the user re-read) whenever the
head moved and at each keep-alive: a removed member's stream ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponseBase
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET

from governance.dashboard.selectors import (
    approvals_moved,
    chain_head_seq,
    feed_list,
    pending_count,
)
from governance.models import Tenant
from governance.selectors import member_role, tenant_access
from orchestrator.sse import event_stream

KEEPALIVE = b": keep-alive\n\n"


def sse_event(name: str, data: str, event_id: int | None = None) -> bytes:
    """One event; every line of ``data`` gets its own ``data:`` field."""
    lines = [f"event: {name}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return ("\n".join(lines) + "\n\n").encode()


def still_member(*, user_id: int, tenant: Tenant) -> bool:
    user = get_user_model().objects.filter(pk=user_id).first()
    return user is not None and member_role(user=user, tenant=tenant) is not None


@dataclass(frozen=True)
class Batch:
    head: int
    events: bytes
    allowed: bool = True


def stream_batch(*, tenant: Tenant, user_id: int, after: int, feed: bool) -> Batch:
    """What is due after ``after``: nothing if the head did not move (one query)."""
    head = chain_head_seq(tenant_id=tenant.id)
    if head <= after:  # below: the chain was reset (a restored database); follow it
        return Batch(head=head, events=b"")
    if not still_member(user_id=user_id, tenant=tenant):
        return Batch(head=head, events=b"", allowed=False)
    events = []
    if feed:
        rows = feed_list(tenant=tenant, upto=head, after=after)
        if rows:
            html = render_to_string(
                "dashboard/_feed_rows.html", {"rows": rows, "slug": tenant.slug, "fresh": True}
            )
            events.append(sse_event("record", html, head))
    if approvals_moved(tenant=tenant, after=after, upto=head):
        html = render_to_string(
            "dashboard/_pending_badge.html", {"pending": pending_count(tenant=tenant)}
        )
        events.append(sse_event("approvals", html, head))
    return Batch(head=head, events=b"".join(events))


async def events(*, tenant: Tenant, user_id: int, after: int, feed: bool) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    poll = settings.DASHBOARD_POLL_SECONDS
    keepalive = float(getattr(settings, "DASHBOARD_STREAM_KEEPALIVE_SECONDS", 15.0))
    deadline = loop.time() + float(getattr(settings, "DASHBOARD_STREAM_MAX_SECONDS", 600.0))
    next_keepalive = loop.time() + keepalive
    cursor = after
    batch_of = sync_to_async(stream_batch)
    member = sync_to_async(still_member)
    yield b"retry: 2000\n\n"
    while True:
        batch = await batch_of(tenant=tenant, user_id=user_id, after=cursor, feed=feed)
        if not batch.allowed:
            return
        cursor = batch.head
        if batch.events:
            yield batch.events
        now = loop.time()
        if now >= deadline:
            return
        if now >= next_keepalive:
            if not await member(user_id=user_id, tenant=tenant):
                return
            yield KEEPALIVE
            next_keepalive = now + keepalive
        await asyncio.sleep(min(poll, deadline - now, max(next_keepalive - now, 0)))


def _cursor(request: HttpRequest, head: int) -> int:
    """Where to start: the last event the browser saw, else the seq the page was drawn at,
    else now. Never beyond the head."""
    for raw in (request.headers.get("Last-Event-ID"), request.GET.get("after")):
        if raw is not None and raw.isdigit():
            return min(int(raw), head)
    return head


@require_GET
async def stream(request: HttpRequest, slug: str) -> HttpResponseBase:
    user = await request.auser()
    if not user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    access = await sync_to_async(tenant_access)(user=user, slug=slug)
    if access is None:
        raise Http404("no such tenant")
    head = await sync_to_async(chain_head_seq)(tenant_id=access.tenant.id)
    body = events(
        tenant=access.tenant,
        user_id=user.pk,
        after=_cursor(request, head),
        feed=request.GET.get("feed") == "1",
    )
    return event_stream(body)
