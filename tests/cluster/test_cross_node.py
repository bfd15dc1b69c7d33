"""Two gateway processes on one PostgreSQL and one Redis: a policy change that enters through
one node reaches agents connected to both; a revoked token's connections close on both; and
the tenant's audit chain stays gap-free while both nodes write to it at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import mcp_types
import pytest
import yaml
from mcp import Client, MCPError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.cluster.conftest import Cluster, Node, until_authorized
from tests.e2e.conftest import jsonrpc, mcp_client

pytestmark = pytest.mark.e2e

ADMIN = "ops-admin"
ADMIN_PASSWORD = "ops-admin-pw"  # a throwaway login on a test database
WAIT = 5.0  # the longest any change may take to show; the poll's bound is 0.25 s
PROPAGATION = 2.0  # what we hold a change to: the poll's bound plus a reload, with room


@pytest.fixture(scope="module")
def nodes(cluster: Cluster) -> tuple[Node, Node]:
    cluster.manage(
        "member_add", ADMIN, "--tenant", "acme", "--role", "admin", MEMBER_PASSWORD=ADMIN_PASSWORD
    )
    return cluster.start("a"), cluster.start("b")


async def agent_new(cluster: Cluster, nodes: tuple[Node, ...]) -> tuple[str, str]:
    """A fresh agent of tenant acme, once every node knows its token."""
    name = f"x-{uuid.uuid4().hex[:8]}"
    out = await asyncio.to_thread(cluster.manage, "agent_create", "--tenant", "acme", name)
    token = out.strip().splitlines()[-1]
    for node in nodes:
        await until_authorized(node, token, timeout=WAIT)
    return name, token


async def outcome(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[str, Any]:
    """("ok", result) or ("error", MCPError)."""
    try:
        return "ok", await client.call_tool(tool, arguments)
    except MCPError as exc:
        return "error", exc


@contextlib.asynccontextmanager
async def listening(node: Node, token: str, heard: list[float]) -> AsyncIterator[Client]:
    """A handshake-era WebSocket client of the SDK; ``heard`` gets the monotonic arrival time
    of each ``notifications/tools/list_changed``."""

    async def on_message(message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            heard.append(time.monotonic())

    async with mcp_client(
        node, token, transport="ws", mode="legacy", message_handler=on_message
    ) as c:
        yield c


async def test_a_policy_change_through_node_a_reaches_agents_on_both_nodes(cluster, nodes):
    a, b = nodes
    name, token = await agent_new(cluster, nodes)
    # What the module's cluster gives everyone: time__get_current_time; this agent nothing else.
    heard_a: list[float] = []
    heard_b: list[float] = []
    async with (
        listening(a, token, heard_a) as on_a,
        listening(b, token, heard_b) as on_b,
        httpx2.AsyncClient(base_url=a.base, auth=(ADMIN, ADMIN_PASSWORD), timeout=10) as api,
    ):
        for client in (on_a, on_b):
            assert (await outcome(client, "time__get_current_time", {"timezone": "UTC"}))[0] == "ok"
            kind, refused = await outcome(client, "testkit__echo", {"text": "before"})
            assert kind == "error"
            assert refused.code == -32001

        # The policy as code, edited and put back through node a's REST API.
        current = await api.get("/api/v1/tenants/acme/policy")
        assert current.status_code == 200, current.text
        policy = yaml.safe_load(current.text)
        policy.setdefault("agents", {}).setdefault(name, []).extend(
            [
                {"effect": "allow", "resource": "testkit__echo"},
                {"effect": "deny", "resource": "time__get_current_time"},
            ]
        )
        put = await api.put(
            "/api/v1/tenants/acme/policy",
            content=yaml.safe_dump(policy),
            headers={"Content-Type": "application/yaml"},
        )
        committed_at = time.monotonic()
        assert put.status_code == 200, put.text
        assert put.json()["rules"]["created"] == 2

        async with asyncio.timeout(WAIT):
            while not (heard_a and heard_b):
                await asyncio.sleep(0.01)
        assert heard_b[0] - committed_at < PROPAGATION, "node b heard of it late"
        assert heard_a[0] - committed_at < PROPAGATION, "node a heard of it late"

        for node, client in ((a, on_a), (b, on_b)):
            names = [t.name for t in (await client.list_tools()).tools]
            assert "testkit__echo" in names, node.name
            assert "time__get_current_time" not in names, node.name
            kind, result = await outcome(client, "testkit__echo", {"text": f"on {node.name}"})
            assert kind == "ok", (node.name, result)
            assert result.content[0].text == f"on {node.name}"
            kind, refused = await outcome(client, "time__get_current_time", {"timezone": "UTC"})
            assert kind == "error", node.name
            assert refused.code == -32001
            assert "denied by rule" in refused.error.message

    # A client that connects afterwards, over HTTP, sees the same on either node.
    for node in nodes:
        async with mcp_client(node, token, transport="http", mode="2026-07-28") as client:
            assert (await outcome(client, "testkit__echo", {"text": "later"}))[0] == "ok"
            kind, refused = await outcome(client, "time__get_current_time", {"timezone": "UTC"})
            assert kind == "error"
            assert refused.code == -32001


async def ws_open(node: Node, token: str) -> ClientConnection:
    ws = await connect(
        node.ws_url, subprotocols=["mcp"], additional_headers={"Authorization": f"Bearer {token}"}
    )
    await ws.send(jsonrpc("initialize", {"protocolVersion": "2025-11-25"}))
    assert '"result"' in await asyncio.wait_for(ws.recv(), WAIT)
    return ws


async def closed_with(ws: ClientConnection) -> tuple[int, str, float]:
    """(close code, reason, wall-clock time) once the server closed ``ws``."""
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason, time.time()


async def test_revocation_closes_the_agents_connections_on_both_nodes(cluster, nodes):
    a, b = nodes
    name, token = await agent_new(cluster, nodes)
    _, bystander = await agent_new(cluster, nodes)
    revoked = [await ws_open(node, token) for node in (a, a, b, b)]
    others = [await ws_open(node, bystander) for node in (a, b)]
    try:
        closing = asyncio.gather(*(closed_with(ws) for ws in revoked))
        out = await asyncio.to_thread(
            cluster.manage, "token_revoke", "--tenant", "acme", "--agent", name
        )
        assert "revoked 1 token" in out
        closes = await closing
        [token_row] = cluster.query(
            "SELECT t.revoked_at FROM governance_agenttoken t"
            " JOIN governance_agent a ON a.id = t.agent_id WHERE a.name = %s",
            (name,),
        )
        for code, reason, at in closes:
            assert code == 4401
            assert "token revoked" in reason
            assert at - token_row["revoked_at"].timestamp() < PROPAGATION

        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with httpx2.AsyncClient() as http:
            for node in nodes:
                refused = await http.post(node.http_url, content=jsonrpc("ping"), headers=headers)
                assert refused.status_code == 401, node.name
                assert "token revoked" in refused.json()["error"]["message"]

        # The other agent's connections, on both nodes, are untouched.
        for ws in others:
            await ws.send(jsonrpc("ping", id=7))
            assert '"result"' in await asyncio.wait_for(ws.recv(), WAIT)
    finally:
        for ws in revoked + others:
            await ws.close()


CLIENTS_PER_NODE = 4
CALLS_PER_CLIENT = 13  # 2 nodes x 4 clients x 13 = 104 calls, a quarter of them denied


async def calls(node: Node, token: str, transport: str, label: str, allowed: bool) -> None:
    """CALLS_PER_CLIENT echo calls at once, each with its own text."""
    mode = "legacy" if transport == "ws" else "2026-07-28"
    seen: list[str] = []
    async with mcp_client(node, token, transport=transport, mode=mode) as client:

        async def one(i: int) -> None:
            kind, result = await outcome(client, "testkit__echo", {"text": f"{label}-{i}"})
            if kind == "ok":
                assert result.content[0].text == f"{label}-{i}"
            else:
                assert result.code == -32001, result
            seen.append(kind)

        await asyncio.gather(*(one(i) for i in range(CALLS_PER_CLIENT)))
    assert seen == ["ok" if allowed else "error"] * CALLS_PER_CLIENT


async def test_the_audit_chain_stays_gap_free_with_both_nodes_writing(cluster, nodes):
    run = uuid.uuid4().hex[:8]
    alice, dave = cluster.tokens["alice"], cluster.tokens["dave"]  # dave may not echo
    plan = [
        (node, token, transport, allowed)
        for node in nodes
        for token, transport, allowed in (
            (alice, "ws", True),
            (alice, "http", True),
            (dave, "ws", False),
            (alice, "ws", True),
        )
    ]
    assert len(plan) == 2 * CLIENTS_PER_NODE
    await asyncio.gather(
        *(
            calls(node, token, transport, f"{run}-{node.name}-{n}", allowed)
            for n, (node, token, transport, allowed) in enumerate(plan)
        )
    )

    seqs = [row["seq"] for row in cluster.query(
        "SELECT r.seq FROM audit_auditrecord r JOIN governance_tenant t ON t.id = r.tenant_id"
        " WHERE t.slug = 'acme' ORDER BY r.seq"
    )]  # fmt: skip
    assert seqs == list(range(1, len(seqs) + 1)), "the chain has a gap or a duplicate"
    [head] = cluster.query(
        "SELECT h.seq FROM audit_chainhead h JOIN governance_tenant t ON t.id = h.tenant_id"
        " WHERE t.slug = 'acme'"
    )
    assert head["seq"] == seqs[-1]

    rows = cluster.audit("tool = 'testkit__echo' AND arguments->>'text' LIKE %s", (f"{run}-%",))
    by_call: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_call.setdefault(str(row["call_id"]), []).append(row)
    assert len(by_call) == len(plan) * CALLS_PER_CLIENT
    stories: Counter[tuple[str, str, str]] = Counter()
    for records in by_call.values():
        intent, result = sorted(records, key=lambda r: r["seq"])
        assert (intent["kind"], result["kind"]) == ("intent", "outcome")
        assert intent["decision"] == result["decision"]
        stories[(result["agent_name"], result["decision"], result["outcome"])] += 1
    allowed = sum(allowed for *_, allowed in plan) * CALLS_PER_CLIENT
    assert stories == {
        ("alice", "allow", "ok"): allowed,
        ("dave", "deny", "denied"): len(by_call) - allowed,
    }

    verified = await asyncio.to_thread(cluster.manage, "audit_verify", "--tenant", "acme")
    assert "acme: OK" in verified, verified
