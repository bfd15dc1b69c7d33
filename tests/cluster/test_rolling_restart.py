"""Graceful drain and rolling restarts, with real gateway processes on PostgreSQL and Redis.

On SIGTERM a gateway stops listening, refuses new calls (-32008), lets the calls in flight
finish, closes its WebSockets with 1012, and exits. Clients that follow the reconnection
contract (examples/reconnecting_agent.py) lose nothing while both gateways restart in turn:
each call completed exactly once.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from examples.reconnecting_agent import ReconnectingAgent
from tests.cluster.conftest import Cluster

pytestmark = pytest.mark.e2e

MAX_CALLS = 400  # per loop
DRAIN_BOUND = 5 + 5  # DRAIN_SECONDS in the cluster's environment, and the process's exit


async def websocket(cluster: Cluster, node: str, agent: str):
    ws = await connect(
        cluster.nodes[node].ws_url,
        subprotocols=[Subprotocol("mcp")],
        additional_headers={"Authorization": f"Bearer {cluster.tokens[agent]}"},
    )
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t"}}
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": hello}))
    assert "result" in json.loads(await ws.recv())
    return ws


def call(request_id: str, tool: str, arguments: dict) -> str:
    params = {"name": tool, "arguments": arguments}
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    )


async def test_a_draining_gateway_finishes_its_calls_refuses_new_ones_and_closes_with_1012(
    cluster: Cluster,
):
    node = cluster.start("solo")
    ws = await websocket(cluster, "solo", "alice")
    await ws.send(call("long", "testkit__sleep", {"seconds": 2}))
    await asyncio.sleep(0.3)  # upstream now
    node.process.terminate()
    await asyncio.sleep(0.3)

    with pytest.raises(ConnectionRefusedError):  # it stopped listening at once
        socket.create_connection(("127.0.0.1", node.port), timeout=2).close()
    await ws.send(call("late", "time__get_current_time", {"timezone": "UTC"}))
    late = json.loads(await ws.recv())
    assert (late["id"], late["error"]["code"]) == ("late", -32008)
    assert "nothing was called" in late["error"]["message"]
    long = json.loads(await ws.recv())
    assert (long["id"], long["result"]["content"][0]["text"]) == ("long", "slept 2.0")
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), DRAIN_BOUND)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        1012,
        "gateway restarting: reconnect",
    )
    assert node.process.wait(timeout=DRAIN_BOUND) == 0
    outcomes = [(r["request_id"], r["outcome"]) for r in cluster.audit("kind = 'outcome'")]
    assert outcomes == [("long", "ok")]  # the refused call was never recorded: it never ran


async def test_a_rolling_restart_of_both_gateways_under_load_loses_no_call(cluster: Cluster):
    cluster.start("a")
    cluster.start("b")
    urls = [cluster.nodes["a"].ws_url, cluster.nodes["b"].ws_url]
    answered: dict[str, dict] = {}
    reconnects: list[int] = []
    stop = asyncio.Event()

    async def loop(n: int, agent: str, tool: str, arguments: dict) -> None:
        order = urls[n % 2 :] + urls[: n % 2]  # half start on each node
        async with ReconnectingAgent(order, cluster.tokens[agent]) as client:
            for i in range(MAX_CALLS):
                if stop.is_set():
                    break
                request_id = f"{agent}-{n}-{i}"
                answered[request_id] = await client.call_tool(
                    tool, arguments, request_id=request_id
                )
            reconnects.append(client.reconnects)

    sleep, now = (
        ("testkit__sleep", {"seconds": 0.1}),
        ("time__get_current_time", {"timezone": "UTC"}),
    )
    plan = [(n, "alice", *sleep) for n in range(4)] + [(n, "bob", *now) for n in range(4, 6)]
    tasks = [asyncio.ensure_future(loop(*p)) for p in plan]
    await asyncio.sleep(1)
    for name in ("a", "b"):
        started = time.monotonic()
        assert await asyncio.to_thread(cluster.stop, name, timeout=DRAIN_BOUND) == 0
        assert time.monotonic() - started < DRAIN_BOUND
        await asyncio.sleep(0.5)  # everyone on the other node meanwhile
        await asyncio.to_thread(cluster.start, name)
        await asyncio.sleep(1)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)  # no OutcomeUnknown: every call settled

    print(f"rolling restart: {len(answered)} calls, {sum(reconnects)} reconnections, none lost")
    assert sum(reconnects) >= len(plan)  # each client moved at least once
    errors = {rid: r["error"] for rid, r in answered.items() if "error" in r}
    assert not errors
    outcomes = Counter(
        (r["request_id"], r["outcome"]) for r in cluster.audit("kind = 'outcome'") if r["tool"]
    )
    ran = {rid for rid, _ in outcomes}
    assert ran >= set(answered)
    # Exactly once: one ok outcome per call the clients made, and nothing else recorded.
    assert {key: count for key, count in outcomes.items() if key[0] in answered} == {
        (rid, "ok"): 1 for rid in answered
    }
    cluster.manage("audit_verify", "--tenant", "acme")
