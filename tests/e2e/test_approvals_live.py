"""Approvals end to end: a real gateway process, the official mcp SDK client (WebSocket and
streamable HTTP, both eras) waiting on a held call with progress, a reviewer deciding through
the REST API, a client that leaves, and gateways stopped gently and killed mid-wait."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError
from websockets.asyncio.client import ClientConnection, connect

from tests.e2e.conftest import Gateway, jsonrpc, mcp_client, start_server, stop_server

pytestmark = pytest.mark.e2e

TOKYO = {"source_timezone": "UTC", "time": "09:30", "target_timezone": "Asia/Tokyo"}
REVIEWER = ("rita", "rita-pw-1234")
QUEUE = "/api/v1/tenants/acme/approvals"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("approvals")
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "GOVERNANCE_POLL_SECONDS": "0.25",
        "APPROVAL_PROGRESS_SECONDS": "0.3",
        "GATEWAY_NODE": "approvals-test-node",
        "UPSTREAM_BACKOFF_INITIAL": "0.1",
        "PYTHONPATH": str(os.getcwd()),
    }
    gateway = Gateway(data_dir=data_dir, env=env)
    gateway.manage("migrate", "-v0")
    gateway.manage("tenant_create", "acme")
    Gateway(data_dir=data_dir, env={**env, "MEMBER_PASSWORD": REVIEWER[1]}).manage(
        "member_add", REVIEWER[0], "--tenant", "acme"
    )
    out = gateway.manage("agent_create", "--tenant", "acme", "alice").stdout
    gateway.tokens["alice"] = out.strip().splitlines()[-1]
    time_server = f"{sys.executable} -m mcp_server_time"
    gateway.manage("toolserver_add", "--tenant", "acme", "time", "--command", time_server)
    gateway.manage("rule_add", "--tenant", "acme", "--agent", "alice", "--tool", "time__*")
    gateway.manage(
        "rule_add", "--tenant", "acme", "--agent", "alice", "--tool", "time__convert_time",
        "--effect", "require_approval", "--description", "conversions need a human",
    )  # fmt: skip
    start_server(gateway)
    yield gateway
    if gateway.process is not None and gateway.process.poll() is None:
        stop_server(gateway)


async def pending(gw: Gateway, count: int = 1) -> list[dict[str, Any]]:
    """The pending requests once there are ``count``, via the API as the reviewer would."""
    async with httpx2.AsyncClient(base_url=gw.base, auth=REVIEWER) as api:
        async with asyncio.timeout(15):
            while True:
                answer = await api.get(
                    "/api/v1/tenants/acme/approvals", params={"status": "pending"}
                )
                results = answer.json()["results"]
                if len(results) >= count:
                    return results
                await asyncio.sleep(0.1)


async def decide(gw: Gateway, approval_id: str, decision: str, comment: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(base_url=gw.base, auth=REVIEWER) as api:
        answer = await api.post(
            f"{QUEUE}/{approval_id}/decision",
            json={"decision": decision, "comment": comment},
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


def status_of(gw: Gateway, approval_id: str) -> str:
    rows = gw.query(
        "SELECT status FROM governance_approvalrequest WHERE id = ?",
        (approval_id.replace("-", ""),),
    )
    return rows[0]["status"]


@pytest.mark.parametrize("transport", ["ws", "http"])
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_the_client_waits_hears_progress_and_gets_the_result_once_approved(
    gw: Gateway, transport: str, mode: str
):
    told: list[tuple[float, float | None, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        told.append((done, total, message))

    async with mcp_client(gw, gw.tokens["alice"], transport=transport, mode=mode) as client:
        call = asyncio.ensure_future(
            client.call_tool("time__convert_time", TOKYO, progress_callback=progress)
        )
        (request,) = await pending(gw)
        assert request["tool"] == "time__convert_time"
        assert request["arguments"] == TOKYO
        async with asyncio.timeout(10):
            while len(told) < 2:  # it hears how the wait goes
                await asyncio.sleep(0.05)
        assert not call.done()
        await decide(gw, request["id"], "approve", f"ok for {transport}/{mode}")
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error
    assert result.structured_content["target"]["timezone"] == "Asia/Tokyo"
    assert result.structured_content["target"]["datetime"].endswith("18:30:00+09:00")
    assert [total for _, total, _ in told] == [900] * len(told)
    assert request["id"] in (told[0][2] or "")
    rows = gw.audit("call_id = ?", (request["call_id"].replace("-", ""),))
    assert [(r["kind"], r["actor"]) for r in rows] == [
        ("intent", ""),
        ("approval", "alice"),
        ("approval", "rita"),
        ("outcome", ""),
    ]
    assert rows[-1]["outcome"] == "ok"
    assert rows[-1]["transport"] == transport


@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_a_denied_call_tells_the_client_the_reviewers_words(gw: Gateway, transport: str):
    async with mcp_client(gw, gw.tokens["alice"], transport=transport) as client:
        call = asyncio.ensure_future(client.call_tool("time__convert_time", TOKYO))
        (request,) = await pending(gw)
        await decide(gw, request["id"], "deny", "not during the freeze")
        with pytest.raises(MCPError) as denied:
            await asyncio.wait_for(call, 15)
    assert denied.value.error.code == -32002
    assert denied.value.error.message == "approval denied by rita: not during the freeze"
    assert denied.value.error.data["approval"] == request["id"]


@contextlib.asynccontextmanager
async def held_on_ws(gw: Gateway) -> AsyncIterator[tuple[ClientConnection, dict[str, Any]]]:
    """A bare WebSocket client whose tools/call is held: the socket and the pending request."""
    headers = {"Authorization": f"Bearer {gw.tokens['alice']}"}
    async with connect(gw.ws_url, subprotocols=["mcp"], additional_headers=headers) as ws:
        await ws.send(jsonrpc("initialize", {"protocolVersion": "2025-11-25"}))
        await ws.recv()
        await ws.send(jsonrpc("tools/call", {"name": "time__convert_time", "arguments": TOKYO}, 2))
        (request,) = await pending(gw)
        yield ws, request


async def test_a_client_that_disconnects_cancels_its_request(gw: Gateway):
    async with held_on_ws(gw) as (_, request):
        pass
    async with asyncio.timeout(10):
        while status_of(gw, request["id"]) == "pending":
            await asyncio.sleep(0.05)
    assert status_of(gw, request["id"]) == "cancelled"
    outcome = gw.wait_for_audit(
        "call_id = ? AND kind = 'outcome'", (request["call_id"].replace("-", ""),), 1
    )
    assert outcome[-1]["outcome"] == "cancelled"


def restart(gw: Gateway, how: signal.Signals) -> None:
    assert gw.process is not None
    gw.process.send_signal(how)
    with contextlib.suppress(subprocess.TimeoutExpired):
        gw.process.wait(timeout=15)
    start_server(gw)


async def test_a_gateway_stopping_answers_its_waiting_calls_clearly(gw: Gateway):
    async with held_on_ws(gw) as (ws, request):
        await asyncio.to_thread(restart, gw, signal.SIGTERM)
        answer = await asyncio.wait_for(ws.recv(), 5)  # sent before the connection went
    assert '"code":-32002' in answer
    assert "approval interrupted: the gateway stopped while this call waited" in answer
    assert "call again" in answer
    assert status_of(gw, request["id"]) == "interrupted"


async def test_a_killed_gateway_resolves_what_it_held_when_it_starts_again(gw: Gateway):
    async with held_on_ws(gw) as (_, request):
        await asyncio.to_thread(restart, gw, signal.SIGKILL)
    # The new process (same GATEWAY_NODE) resolves it as it starts, before serving anyone.
    async with mcp_client(gw, gw.tokens["alice"]) as client:
        await client.list_tools()
    assert status_of(gw, request["id"]) == "interrupted"
    rows = gw.audit("call_id = ? AND kind = 'approval'", (request["call_id"].replace("-", ""),))
    assert rows[-1]["actor"] == "gateway"
    assert "the gateway restarted while this call waited" in rows[-1]["reason"]
    assert gw.manage("audit_verify").returncode == 0


async def test_progress_keeps_an_http_wait_alive_past_the_clients_read_timeout(gw: Gateway):
    """httpx's default read timeout is 5 s: a longer wait survives on the progress events."""
    async with mcp_client(gw, gw.tokens["alice"], transport="http") as client:
        call = asyncio.ensure_future(
            client.call_tool("time__convert_time", TOKYO, progress_callback=lambda *_: _none())
        )
        (request,) = await pending(gw)
        await asyncio.sleep(6)
        assert not call.done(), call
        await decide(gw, request["id"], "approve", "after a while")
        result = await asyncio.wait_for(call, 30)
    assert not result.is_error


async def _none() -> None:
    return None


# Last in this module: it leaves a deny rule behind.
async def test_an_approval_does_not_release_a_call_a_newer_rule_denies(gw: Gateway):
    async with mcp_client(gw, gw.tokens["alice"], transport="ws") as client:
        call = asyncio.ensure_future(client.call_tool("time__convert_time", TOKYO))
        (request,) = await pending(gw)
        gw.manage(
            "rule_add", "--tenant", "acme", "--agent", "alice", "--tool", "time__convert_time",
            "--effect", "deny", "--description", "no conversions any more",
        )  # fmt: skip
        async with mcp_client(gw, gw.tokens["alice"]) as other, asyncio.timeout(10):
            while True:  # until the gateway has applied the rule: a new call is refused at once
                try:
                    await other.call_tool("time__convert_time", TOKYO)
                except MCPError as exc:
                    if exc.error.code == -32001:
                        break
                await asyncio.sleep(0.1)
        await decide(gw, request["id"], "approve", "approved before I saw the new rule")
        with pytest.raises(MCPError) as refused:
            await asyncio.wait_for(call, 15)
    assert refused.value.error.code == -32001
    assert "no conversions any more" in refused.value.error.message
    rows = gw.audit("call_id = ?", (request["call_id"].replace("-", ""),))
    assert (rows[0]["kind"], rows[0]["decision"]) == ("intent", "require_approval")
    assert [r["kind"] for r in rows] == ["intent", "approval", "approval", "outcome"]
    assert rows[-1]["outcome"] == "denied"
    assert rows[-1]["error"].startswith("policy changed while the call waited: denied by rule")
    assert gw.manage("audit_verify").returncode == 0
