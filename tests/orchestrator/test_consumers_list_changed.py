"""AgentConsumer tells its client when the agent's tool list changes: after notifications/
initialized in the handshake era, on subscriptions/listen streams in 2026-07-28."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from governance.models import AgentToken, ToolServer
from governance.services.agents import token_revoke
from governance.services.toolservers import tool_catalog_sync
from orchestrator.asgi import application
from tests.orchestrator.conftest import META, SUBSCRIPTION_ID, allow, tool

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_gateway")]

QUIET = 0.5  # ten polls of the gateway (GOVERNANCE_POLL_SECONDS is 0.05 under pytest)


async def connected(token: str) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(
        application,
        "/mcp/ws",
        headers=[(b"authorization", f"Bearer {token}".encode())],
        subprotocols=["mcp"],
    )
    assert (await ws.connect())[0]
    return ws


async def send(ws: WebsocketCommunicator, method: str, params=None, id=None) -> None:
    message = {"jsonrpc": "2.0", "method": method, "params": params or {}}
    if id is not None:
        message["id"] = id
    await ws.send_to(text_data=json.dumps(message))


async def receive(ws: WebsocketCommunicator, timeout: float = 1.0) -> dict:
    return json.loads(await ws.receive_from(timeout=timeout))


async def initialized(token: str) -> WebsocketCommunicator:
    ws = await connected(token)
    await send(ws, "initialize", {"protocolVersion": "2025-11-25"}, id=1)
    init = await receive(ws)
    assert init["result"]["capabilities"] == {"tools": {"listChanged": True}}
    await send(ws, "notifications/initialized")
    return ws


async def test_handshake_connection_hears_a_change_of_its_list_only(alice_token):
    ws = await initialized(alice_token)
    await sync_to_async(allow)("bob", "files__*")  # bob's list, not alice's
    assert await ws.receive_nothing(timeout=QUIET)
    await sync_to_async(allow)("alice", "files__write")
    assert await receive(ws) == {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
    await send(ws, "tools/list", id=2)
    listed = await receive(ws)
    assert [t["name"] for t in listed["result"]["tools"]] == ["files__read", "files__write"]
    assert await ws.receive_nothing(timeout=QUIET)  # one change, one notification
    await ws.disconnect()


async def test_a_changed_definition_is_a_change(alice_token):
    ws = await initialized(alice_token)
    server = await ToolServer.objects.aget()
    changed = {**tool("read"), "description": "reads, now with a new description"}
    await sync_to_async(tool_catalog_sync)(server_id=server.id, tools=[changed, tool("write")])
    assert (await receive(ws))["method"] == "notifications/tools/list_changed"
    await ws.disconnect()


async def test_nothing_before_initialized_then_what_changed_since_initialize(alice_token):
    ws = await connected(alice_token)
    await send(ws, "initialize", {"protocolVersion": "2025-11-25"}, id=1)
    await receive(ws)
    await sync_to_async(allow)("alice", "files__write")
    assert await ws.receive_nothing(timeout=QUIET)
    await send(ws, "notifications/initialized")
    assert (await receive(ws))["method"] == "notifications/tools/list_changed"
    await ws.disconnect()


async def test_listen_acknowledges_first_then_notifies_on_its_stream(alice_token):
    ws = await connected(alice_token)
    await send(
        ws,
        "subscriptions/listen",
        {
            "_meta": META,
            "notifications": {
                "toolsListChanged": True,
                "promptsListChanged": True,
            },
        },
        id="listen-1",
    )
    assert await receive(ws) == {
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {
            "_meta": {SUBSCRIPTION_ID: "listen-1"},
            "notifications": {
                "toolsListChanged": True  # no prompts here: not honoured, so not acknowledged
            },
        },
    }
    await sync_to_async(allow)("alice", "files__write")
    assert await receive(ws) == {
        "jsonrpc": "2.0",
        "method": "notifications/tools/list_changed",
        "params": {"_meta": {SUBSCRIPTION_ID: "listen-1"}},
    }
    # Cancelled: the stream ends without a response, and nothing more comes on it.
    await send(ws, "notifications/cancelled", {"requestId": "listen-1"})
    await sync_to_async(allow)("alice", "files__*")
    await send(ws, "tools/list", {"_meta": META}, id=3)
    listed = await receive(ws)
    assert listed["id"] == 3
    assert await ws.receive_nothing(timeout=QUIET)
    await ws.disconnect()


async def test_listen_without_tools_gets_nothing_and_handshake_has_no_listen(alice_token):
    ws = await connected(alice_token)
    await send(ws, "subscriptions/listen", {"_meta": META, "notifications": {}}, id=1)
    ack = await receive(ws)
    assert ack["params"]["notifications"] == {}
    await sync_to_async(allow)("alice", "files__write")
    assert await ws.receive_nothing(timeout=QUIET)
    await send(ws, "subscriptions/listen", {"_meta": META}, id=2)
    assert (await receive(ws))["error"]["code"] == -32602  # params.notifications is required
    await ws.disconnect()

    old = await initialized(alice_token)
    await send(old, "subscriptions/listen", {"notifications": {"toolsListChanged": True}}, id=2)
    assert (await receive(old))["error"]["code"] == -32601
    await old.disconnect()


async def test_revocation_still_closes_a_listening_connection(alice_token):
    ws = await connected(alice_token)
    await send(
        ws,
        "subscriptions/listen",
        {"_meta": META, "notifications": {"toolsListChanged": True}},
        id=1,
    )
    await receive(ws)
    record = await AgentToken.objects.select_related("agent").aget()
    await sync_to_async(token_revoke)(token=record)
    closed = await ws.receive_output(timeout=1)
    assert (closed["type"], closed["code"]) == ("websocket.close", 4401)
