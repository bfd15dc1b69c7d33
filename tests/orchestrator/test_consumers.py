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
from orchestrator import consumers
from orchestrator.asgi import application
from orchestrator.protocol.mcp import McpSession

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


async def test_faulty_frames_slow_down_only_their_own_connection(token):
    flooder, other = connect(token), connect(token)
    await flooder.connect()
    await other.connect()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(8):
        await flooder.send_to(text_data="{broken")
    answered = await request(other, "initialize", {"protocolVersion": "2025-11-25"})
    other_done = loop.time()
    for _ in range(8):
        assert (await flooder.receive_json_from(timeout=5))["error"]["code"] == -32700
    flooder_done = loop.time()
    assert "result" in answered
    # Each fault holds the flooder's next frame back: 7 waits at least, whatever the machine.
    assert flooder_done - started >= 7 * consumers.FAULT_SECONDS
    assert other_done < flooder_done  # the other connection did not wait behind them
    await asyncio.gather(flooder.disconnect(), other.disconnect())


async def test_a_connections_calls_start_two_at_a_time_and_a_slow_one_gives_way(token, monkeypatch):
    running, most, starts = 0, 0, {}

    async def handle(self, request):
        nonlocal running, most
        starts[request.id] = asyncio.get_running_loop().time()
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(request.params["arguments"]["seconds"])
        finally:
            running -= 1
        return {"jsonrpc": "2.0", "id": request.id, "result": {"content": []}}

    monkeypatch.setattr(McpSession, "handle", handle)
    ws = connect(token)
    await ws.connect()
    for call_id in range(1, 7):  # quick calls: never more than two run at once
        params = {"name": "files__read", "arguments": {"seconds": 0.02}}
        frame = {"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": params}
        await ws.send_to(text_data=json.dumps(frame))
    for _ in range(6):
        assert "result" in await ws.receive_json_from(timeout=5)
    assert most == consumers.MAX_RUNNING_CALLS
    for call_id in (7, 8, 9):  # slow calls: the third starts once a slot was given up
        params = {"name": "files__read", "arguments": {"seconds": 1.0}}
        frame = {"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": params}
        await ws.send_to(text_data=json.dumps(frame))
    for _ in range(3):
        assert "result" in await ws.receive_json_from(timeout=5)
    assert consumers.SLOT_SECONDS <= starts[9] - starts[7] < 0.9
    await ws.disconnect()
