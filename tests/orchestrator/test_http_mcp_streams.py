"""The server-initiated SSE streams of /mcp, in process: the handshake era's GET stream and the
2026-07-28 subscriptions/listen response — what opens them, what they carry, what ends them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from governance.models import AgentToken
from governance.services.agents import token_revoke
from orchestrator.protocol.mcp import MAX_SUBSCRIPTIONS
from tests.orchestrator.conftest import META, MODERN, SUBSCRIPTION_ID, allow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_gateway")]

LIST_CHANGED = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{32}")


@pytest.fixture(autouse=True)
def quick_keepalive(settings) -> None:
    settings.MCP_STREAM_KEEPALIVE_SECONDS = 0.1


class Stream:
    """One SSE response, read event by event (the gateway writes one event per chunk)."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.chunks = aiter(response.streaming_content)

    async def next(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The next event that is not a keep-alive comment, as its fields (``data`` parsed);
        None once the stream has ended."""
        async with asyncio.timeout(timeout):
            async for chunk in self.chunks:
                if not chunk.startswith(b":"):
                    return parse_event(chunk)
        return None

    async def quiet(self, seconds: float = 0.4) -> None:
        """Assert that only keep-alives arrive for a while (and that they do arrive)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            async with asyncio.timeout(1.0):
                chunk = await anext(self.chunks)
            assert chunk == b": keep-alive\n\n"

    async def close(self) -> None:
        """Leave as a client does: the server, waiting for something to send, is cancelled."""

        async def drain() -> None:
            async for _ in self.chunks:
                pass

        reading = asyncio.ensure_future(drain())
        await asyncio.sleep(0.01)
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
        await self.response.streaming_content.aclose()


def parse_event(chunk: bytes) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for line in chunk.decode().strip("\n").split("\n"):
        name, _, value = line.partition(": ")
        fields[name] = value
    fields["data"] = json.loads(fields["data"]) if fields.get("data") else ""
    return fields


@pytest.fixture
async def streams() -> AsyncIterator[list[Stream]]:
    """Streams a test opened, closed at its end whatever happened."""
    opened: list[Stream] = []
    yield opened
    for stream in opened:
        await stream.close()


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


async def initialize(client: AsyncClient, token: str) -> str:
    response = await client.post(
        "/mcp",
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25"},
        },
        content_type="application/json",
        headers=auth(token),
    )
    assert response.json()["result"]["capabilities"] == {"tools": {"listChanged": True}}
    return response.headers["Mcp-Session-Id"]


async def get_stream(
    client: AsyncClient, token: str, session_id: str, streams: list[Stream], **headers: str
) -> Stream:
    response = await client.get(
        "/mcp",
        headers=auth(
            token, **{"Mcp-Session-Id": session_id, "Accept": "text/event-stream"}, **headers
        ),
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["X-Accel-Buffering"] == "no"
    stream = Stream(response)
    streams.append(stream)
    return stream


async def listen(
    client: AsyncClient,
    token: str,
    streams: list[Stream] | None = None,
    id: Any = "l-1",
    notifications: Any = None,
    accept: str = "application/json, text/event-stream",
) -> Any:
    params = {"_meta": META}
    if notifications is not False:
        params["notifications"] = notifications or {"toolsListChanged": True}
    response = await client.post(
        "/mcp",
        {"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen", "params": params},
        content_type="application/json",
        headers=auth(
            token,
            **{
                "MCP-Protocol-Version": MODERN,
                "Mcp-Method": "subscriptions/listen",
                "Accept": accept,
            },
        ),
    )
    if streams is None or response.status_code != 200:
        return response
    assert response["Content-Type"] == "text/event-stream"
    stream = Stream(response)
    streams.append(stream)
    return stream


async def test_get_is_405_without_a_session_in_2026_or_for_other_methods(async_client, alice_token):
    session_id = await initialize(async_client, alice_token)
    no_session = await async_client.get("/mcp", headers=auth(alice_token))
    assert no_session.status_code == 405
    assert no_session["Allow"] == "POST, DELETE"
    modern = await async_client.get(
        "/mcp",
        headers=auth(alice_token, **{"Mcp-Session-Id": session_id, "MCP-Protocol-Version": MODERN}),
    )
    assert modern.status_code == 405
    put = await async_client.put("/mcp", headers=auth(alice_token))
    assert (put.status_code, put["Allow"]) == (405, "GET, POST, DELETE")
    forged = await async_client.get(
        "/mcp", headers=auth(alice_token, **{"Mcp-Session-Id": "forged"})
    )
    assert forged.status_code == 404
    json_only = await async_client.get(
        "/mcp",
        headers=auth(alice_token, **{"Mcp-Session-Id": session_id, "Accept": "application/json"}),
    )
    assert json_only.status_code == 406


async def test_get_stream_primes_then_tells_a_change_of_the_agents_list(
    async_client, alice_token, streams
):
    stream = await get_stream(
        async_client, alice_token, await initialize(async_client, alice_token), streams
    )
    primer = await stream.next()
    assert EVENT_ID.fullmatch(primer["id"])
    assert (primer["retry"], primer["data"]) == ("500", "")
    await sync_to_async(allow)("bob", "files__*")  # bob's list, not alice's
    await stream.quiet()
    await sync_to_async(allow)("alice", "files__write")
    told = await stream.next()
    assert told["data"] == LIST_CHANGED
    assert EVENT_ID.fullmatch(told["id"])
    assert told["id"][9:] != primer["id"][9:]  # the id carries the new fingerprint
    await stream.quiet()


async def test_get_stream_tells_a_change_it_was_not_open_for(async_client, alice_token, streams):
    session_id = await initialize(async_client, alice_token)
    await sync_to_async(allow)("alice", "files__write")  # after initialize, before the GET
    await asyncio.sleep(0.3)
    first = await get_stream(async_client, alice_token, session_id, streams)
    primer = await first.next()
    told = await first.next()
    assert told["data"] == LIST_CHANGED
    await first.close()
    # Reconnecting with the last event's id: nothing missed, nothing told.
    again = await get_stream(
        async_client, alice_token, session_id, streams, **{"Last-Event-ID": told["id"]}
    )
    assert (await again.next())["data"] == ""
    await again.quiet()
    # With an older id: the change since is told at once.
    late = await get_stream(
        async_client, alice_token, session_id, streams, **{"Last-Event-ID": primer["id"]}
    )
    await late.next()
    assert (await late.next())["data"] == LIST_CHANGED


async def test_a_newer_get_stream_or_delete_ends_the_sessions_stream(
    async_client, alice_token, streams
):
    session_id = await initialize(async_client, alice_token)
    first = await get_stream(async_client, alice_token, session_id, streams)
    await first.next()
    second = await get_stream(async_client, alice_token, session_id, streams)
    await second.next()
    assert await first.next() is None  # one stream per session: the newer one replaces it
    deleted = await async_client.delete(
        "/mcp", headers=auth(alice_token, **{"Mcp-Session-Id": session_id})
    )
    assert deleted.status_code == 204
    assert await second.next() is None


async def test_streams_end_when_the_token_is_revoked(async_client, alice_token, streams):
    session = await get_stream(
        async_client, alice_token, await initialize(async_client, alice_token), streams
    )
    await session.next()
    listening = await listen(async_client, alice_token, streams)
    await listening.next()
    record = await AgentToken.objects.select_related("agent").aget()
    await sync_to_async(token_revoke)(token=record)
    assert await session.next() is None
    refused = await listening.next()
    assert refused["data"]["id"] == "l-1"
    assert refused["data"]["error"] == {"code": -32010, "message": "unauthorized: token revoked"}
    assert await listening.next() is None


async def test_streams_are_bounded_in_time(async_client, alice_token, streams, settings):
    settings.MCP_STREAM_MAX_SECONDS = 0.3
    session = await get_stream(
        async_client, alice_token, await initialize(async_client, alice_token), streams
    )
    await session.next()
    listening = await listen(async_client, alice_token, streams, id=7)
    await listening.next()
    assert await session.next() is None  # the client reconnects after "retry"
    closed = await listening.next()  # graceful: the listen request's result
    assert closed["data"]["id"] == 7
    assert closed["data"]["result"]["resultType"] == "complete"
    assert closed["data"]["result"]["_meta"][SUBSCRIPTION_ID] == 7
    assert await listening.next() is None


async def test_listen_acknowledges_first_then_notifies(async_client, alice_token, streams):
    stream = await listen(
        async_client,
        alice_token,
        streams,
        notifications={"toolsListChanged": True, "resourceSubscriptions": ["file:///x"]},
    )
    ack = await stream.next()
    assert "id" not in ack  # not resumable
    assert ack["data"] == {
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {"_meta": {SUBSCRIPTION_ID: "l-1"}, "notifications": {"toolsListChanged": True}},
    }
    await sync_to_async(allow)("bob", "files__*")
    await stream.quiet()
    await sync_to_async(allow)("alice", "files__write")
    assert (await stream.next())["data"] == {
        **LIST_CHANGED,
        "params": {"_meta": {SUBSCRIPTION_ID: "l-1"}},
    }


async def test_listen_refusals(async_client, alice_token):
    json_only = await listen(async_client, alice_token, accept="application/json")
    assert json_only.status_code == 406
    no_filter = await listen(async_client, alice_token, notifications=False)
    assert (no_filter.status_code, no_filter.json()["error"]["code"]) == (400, -32602)
    session_id = await initialize(async_client, alice_token)
    handshake = await async_client.post(
        "/mcp",
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "subscriptions/listen",
            "params": {"notifications": {"toolsListChanged": True}},
        },
        content_type="application/json",
        headers=auth(alice_token, **{"Mcp-Session-Id": session_id}),
    )
    assert (handshake.status_code, handshake.json()["error"]["code"]) == (404, -32601)


async def test_open_streams_per_token_are_capped(async_client, alice_token, streams):
    for i in range(MAX_SUBSCRIPTIONS):
        await (await listen(async_client, alice_token, streams, id=i)).next()
    refused = await listen(async_client, alice_token, streams, id="one-too-many")
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith("subscription limit reached")
    await streams.pop().close()
    await (await listen(async_client, alice_token, streams, id="room-again")).next()
