"""AgentConsumer through the real ASGI application, with channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from governance.models import AgentToken
from governance.services.agents import agent_create, tenant_create, token_issue, token_revoke
from governance.services.policy import rule_create
from governance.services.toolservers import tool_catalog_sync, toolserver_add
from orchestrator.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_gateway")]


def tool(name: str) -> dict:
    return {"name": name, "description": name, "inputSchema": {"type": "object"}}


@pytest.fixture
def token() -> str:
    tenant = tenant_create(slug="acme")
    agent = agent_create(tenant=tenant, name="alice")
    server = toolserver_add(tenant=tenant, name="files", command="never-started")
    tool_catalog_sync(server_id=server.id, tools=[tool("read"), tool("write"), tool("delete")])
    rule_create(tenant=tenant, agent=agent, effect="allow", resource="files__r*")
    rule_create(tenant=tenant, effect="allow", resource="files__write")
    return token_issue(agent=agent).token


def connect(token: str | None, subprotocols=("mcp",)) -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return WebsocketCommunicator(
        application, "/mcp/ws", headers=headers, subprotocols=list(subprotocols)
    )


async def request(ws: WebsocketCommunicator, method: str, params=None, id=1) -> dict:
    await ws.send_to(
        text_data=json.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}})
    )
    return json.loads(await ws.receive_from(timeout=5))


async def test_lists_only_allowed_tools_in_name_order(token):
    ws = connect(token)
    connected, subprotocol = await ws.connect()
    assert (connected, subprotocol) == (True, "mcp")
    init = await request(ws, "initialize", {"protocolVersion": "2025-11-25"})
    assert init["result"]["serverInfo"]["name"] == "workingagents-orchestrator"
    listed = await request(ws, "tools/list", id=2)
    assert [t["name"] for t in listed["result"]["tools"]] == ["files__read", "files__write"]
    await ws.disconnect()


async def test_missing_token_is_closed_with_4401(token):
    ws = connect(None)
    connected, _ = await ws.connect()
    assert connected
    closed = await ws.receive_output(timeout=5)
    assert closed == {
        "type": "websocket.close",
        "code": 4401,
        "reason": "unauthorized: unknown token",
    }


async def test_without_the_mcp_subprotocol_the_handshake_is_refused(token):
    connected, _ = await connect(token, subprotocols=()).connect()
    assert not connected


async def test_revocation_closes_the_live_connection(token):
    ws = connect(token)
    await ws.connect()
    await request(ws, "initialize", {"protocolVersion": "2025-11-25"})
    record = await AgentToken.objects.select_related("agent").aget()
    await sync_to_async(token_revoke)(token=record)
    closed = await ws.receive_output(timeout=1)
    assert closed["code"] == 4401
    assert closed["reason"] == "unauthorized: token revoked"


async def test_bad_frames_get_errors_and_the_connection_lives_on(token):
    ws = connect(token)
    await ws.connect()
    for frame in ["{", "[]", '{"jsonrpc": "2.0", "id": 1}']:
        await ws.send_to(text_data=frame)
        reply = json.loads(await ws.receive_from(timeout=5))
        assert reply["error"]["code"] in (-32700, -32600)
    denied = await request(ws, "initialize", {"protocolVersion": "2025-11-25"})
    assert "result" in denied
    refused = await request(ws, "tools/call", {"name": "files__delete"}, id=3)
    assert refused["error"]["code"] == -32001
    await ws.disconnect()


async def test_two_connections_are_independent(token):
    first, second = connect(token), connect(token)
    await first.connect()
    await second.connect()
    await first.send_to(text_data="{broken")
    ok = await request(second, "initialize", {"protocolVersion": "2025-11-25"})
    assert "result" in ok
    assert (await first.receive_json_from(timeout=5))["error"]["code"] == -32700
    await asyncio.gather(first.disconnect(), second.disconnect())
