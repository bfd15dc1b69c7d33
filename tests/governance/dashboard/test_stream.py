"""The live stream (SSE), read in process: new calls arrive as feed rows, approval changes as
an ``approvals`` event, only the tenant's own, from where the browser left off; keep-alives,
a bounded life, and an end for a member who is removed."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from django.urls import reverse

from audit.models import AuditRecord
from governance.models import Membership
from tests.governance.dashboard.conftest import World, call, hold

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def quick(settings: Any) -> None:
    settings.DASHBOARD_POLL_SECONDS = 0.05
    settings.DASHBOARD_STREAM_KEEPALIVE_SECONDS = 0.3
    settings.DASHBOARD_STREAM_MAX_SECONDS = 5


class Stream:
    def __init__(self, response: Any) -> None:
        self.response = response
        self.chunks = aiter(response.streaming_content)

    async def chunk(self, timeout: float = 2.0) -> bytes | None:
        async with asyncio.timeout(timeout):
            return await anext(self.chunks, None)

    async def events(self, timeout: float = 2.0) -> list[dict[str, str]]:
        """The next chunk that carries events (not a comment nor ``retry``), parsed."""
        async with asyncio.timeout(timeout):
            async for chunk in self.chunks:
                if chunk.startswith((b":", b"retry:")):
                    continue
                return [parse(block) for block in chunk.decode().split("\n\n") if block]
        return []

    async def close(self) -> None:
        await self.response.streaming_content.aclose()


def parse(block: str) -> dict[str, str]:
    event: dict[str, str] = {"data": ""}
    data = []
    for line in block.split("\n"):
        name, _, value = line.partition(": ")
        if name == "data":
            data.append(value)
        else:
            event[name] = value
    event["data"] = "\n".join(data)
    return event


@contextlib.asynccontextmanager
async def stream(user: Any, w: World, query: str = "?feed=1", headers: Any = None):
    client = AsyncClient()
    await client.aforce_login(user)
    url = reverse("dashboard:stream", args=[w.slug]) + query
    response = await client.get(url, headers=headers)
    assert response.status_code == 200
    opened = Stream(response)
    try:
        yield opened
    finally:
        await opened.close()


def head(w: World) -> int:
    return (
        AuditRecord.objects.filter(tenant=w.tenant)
        .order_by("-seq")
        .values_list("seq", flat=True)[0]
    )


async def test_new_calls_arrive_as_feed_rows(reviewer: Any, a: World, b: World) -> None:
    async with stream(reviewer, a) as events:
        assert events.response["Content-Type"] == "text/event-stream"
        assert events.response["Cache-Control"] == "no-cache"
        assert events.response["X-Accel-Buffering"] == "no"
        assert await events.chunk() == b"retry: 2000\n\n"
        await sync_to_async(call)(b.tenant, b.agent, b.tool)  # another tenant's: never sent
        first = await sync_to_async(call)(a.tenant, a.agent, a.tool)
        second = await sync_to_async(call)(a.tenant, a.agent, "acmesrv__log", outcome="tool_error")
        rows = []
        while len(rows) < 2:
            for event in await events.events():
                assert event["event"] == "record"
                assert event["id"].isdigit()
                rows += [line for line in event["data"].split("\n") if "<tr " in line]
        assert rows[0].startswith(f'<tr data-call-id="{second}" class="o-tool_error fresh">')
        assert rows[1].startswith(f'<tr data-call-id="{first}"')
        assert "globex" not in "".join(rows)
        assert int(event["id"]) == await sync_to_async(head)(a)


async def test_approvals_event_carries_the_pending_count(reviewer: Any, a: World) -> None:
    async with stream(reviewer, a, "") as events:  # not the feed: no rows
        await sync_to_async(hold)(a.tenant, a.agent, "acmesrv__push")
        (event,) = await events.events()
        assert event["event"] == "approvals"
        assert event["data"].startswith('<span id="pending-count" class="count hot"')
        assert ">2</span>" in event["data"]


async def test_a_browser_resumes_where_it_left_off(reviewer: Any, a: World) -> None:
    before_calls = await sync_to_async(
        lambda: AuditRecord.objects.get(call_id=a.ok_call, kind="intent").seq - 1
    )()
    for resume in (
        {"query": f"?feed=1&after={before_calls}"},
        {"headers": {"Last-Event-ID": str(before_calls)}},
    ):
        async with stream(reviewer, a, **resume) as events:
            found = await events.events()
        names = [e["event"] for e in found]
        assert names == ["record", "approvals"]  # three calls and the held one, at once
        rows = [line for line in found[0]["data"].split("\n") if line.startswith("<tr ")]
        assert [r.split('"')[1] for r in rows] == [
            str(a.blocked_call),
            str(a.denied_call),
            str(a.ok_call),
        ]


async def test_keepalives_and_a_bounded_life(settings: Any, reviewer: Any, a: World) -> None:
    settings.DASHBOARD_STREAM_MAX_SECONDS = 0.7
    async with stream(reviewer, a) as events:
        chunks = []
        async with asyncio.timeout(3):
            async for chunk in events.chunks:
                chunks.append(chunk)
        assert chunks[0] == b"retry: 2000\n\n"
        assert chunks[1:] == [b": keep-alive\n\n"] * len(chunks[1:])
        assert 1 <= len(chunks[1:]) <= 3


async def test_a_removed_member_is_cut_off(reviewer: Any, a: World) -> None:
    async with stream(reviewer, a) as events:
        await events.chunk()  # retry
        await sync_to_async(Membership.objects.filter(user=reviewer).delete)()
        await sync_to_async(call)(a.tenant, a.agent, a.tool)
        assert await events.chunk() is None  # ended, nothing sent


async def test_anonymous_and_outsiders_get_no_stream(outsider: Any, a: World) -> None:
    url = reverse("dashboard:stream", args=[a.slug])
    response = await AsyncClient().get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    client = AsyncClient()
    await client.aforce_login(outsider)
    assert (await client.get(url)).status_code == 404
