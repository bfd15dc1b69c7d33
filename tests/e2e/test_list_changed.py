"""notifications/tools/list_changed end to end: the official mcp SDK client, unmodified, over
each transport and era; the agent's permissions change from another process; the client hears
of it within a second — and hears nothing when its tool list did not change."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import mcp_types
import pytest
from mcp import Client

from orchestrator.protocol.mcp import MAX_SUBSCRIPTIONS
from tests.e2e.conftest import Gateway, jsonrpc, list_all, mcp_client

pytestmark = pytest.mark.e2e


def allow(gateway: Gateway, agent: str, tool_glob: str) -> None:
    """Allow ``agent`` the tools matching ``tool_glob``: the one place that knows how."""
    gateway.manage("rule_add", "--tenant", "acme", "--agent", agent, "--tool", tool_glob)


TRANSPORTS_AND_ERAS = [
    ("http", "legacy"),
    ("http", "2026-07-28"),
    ("ws", "legacy"),
    ("ws", "2026-07-28"),
]
EVERY_AGENT = ["time__get_current_time"]  # what the session fixture allows every agent


def tenant_version(gateway: Gateway) -> int:
    [row] = gateway.query("SELECT version FROM governance_tenant WHERE slug = 'acme'")
    return row["version"]


def change_permissions(gateway: Gateway, agent: str, tool_glob: str) -> float:
    """Run ``allow`` in another process; return (monotonic) when its change committed, as seen
    by watching the tenant's version in the database."""
    before = tenant_version(gateway)
    with ThreadPoolExecutor(max_workers=1) as pool:
        done = pool.submit(allow, gateway, agent, tool_glob)
        deadline = time.monotonic() + 60
        while tenant_version(gateway) == before and not done.done():
            assert time.monotonic() < deadline, "the change never committed"
            time.sleep(0.005)
        committed_at = time.monotonic()
        done.result()
    return committed_at


async def new_agent(gateway: Gateway) -> tuple[str, str]:
    """A fresh agent of tenant acme (other tests' agents stay as they are), once the gateway
    knows its token."""
    name = f"lc-{uuid.uuid4().hex[:8]}"
    out = await asyncio.to_thread(gateway.manage, "agent_create", "--tenant", "acme", name)
    token = out.stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx2.AsyncClient() as http:
        for _ in range(100):
            known = await http.post(
                gateway.http_url,
                content=jsonrpc("initialize", {"protocolVersion": "2025-11-25"}),
                headers=headers,
            )
            if known.status_code != 401:
                return name, token
            await asyncio.sleep(0.05)
    pytest.fail("the gateway never learned the new agent's token")


@contextlib.asynccontextmanager
async def listening_client(
    gateway: Gateway, token: str, transport: str, mode: str, heard: list[float]
) -> AsyncIterator[Client]:
    """The SDK client; ``heard`` gets the (monotonic) arrival time of every list_changed.
    In 2026-07-28 it also holds a subscriptions/listen stream open for tool list changes."""

    async def on_message(message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            heard.append(time.monotonic())

    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            mcp_client(gateway, token, transport=transport, mode=mode, message_handler=on_message)
        )
        if mode == "legacy":
            capabilities = client.server_capabilities
        else:  # a pinned version synthesizes its discover result: ask the server itself
            raw = await client.session.send_discover(mode)
            capabilities = mcp_types.DiscoverResult.model_validate(raw).capabilities
        assert capabilities.tools is not None
        assert capabilities.tools.list_changed is True
        if mode != "legacy":
            subscription = await stack.enter_async_context(client.listen(tools_list_changed=True))
            assert subscription.honored.tools_list_changed is True
        yield client


async def wait_until(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("transport", "mode"), TRANSPORTS_AND_ERAS)
async def test_a_permission_change_reaches_the_agent_within_a_second(
    gateway: Gateway, transport: str, mode: str
):
    name, token = await new_agent(gateway)
    heard: list[float] = []
    async with listening_client(gateway, token, transport, mode, heard) as client:
        assert await list_all(client) == EVERY_AGENT

        # Allowed already (every agent may): the tenant's state moves, this agent's list doesn't.
        await asyncio.to_thread(change_permissions, gateway, name, "time__get_current_time")
        await asyncio.sleep(1.0)  # four polls of the gateway
        assert heard == []

        committed_at = await asyncio.to_thread(
            change_permissions, gateway, name, "time__convert_time"
        )
        await wait_until(lambda: heard, 5)
        assert heard, "no notifications/tools/list_changed arrived"
        assert heard[0] - committed_at < 1.0, f"heard {heard[0] - committed_at:.2f} s after"
        assert await list_all(client) == ["time__convert_time", "time__get_current_time"]
        result = await client.call_tool(
            "time__convert_time",
            {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"},
        )
        assert not result.is_error
        await asyncio.sleep(0.5)
    assert len(heard) == 1  # one change, one notification


LISTEN_HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "subscriptions/listen",
}
LISTEN_BODY = jsonrpc(
    "subscriptions/listen",
    {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
        "notifications": {"toolsListChanged": True},
    },
)


async def data_lines(response: httpx2.Response) -> AsyncIterator[str]:
    """The ``data:`` lines of an SSE response, as they come."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line


async def test_a_client_leaving_frees_its_streams(gateway: Gateway):
    _, token = await new_agent(gateway)
    headers = {"Authorization": f"Bearer {token}", **LISTEN_HEADERS}
    async with httpx2.AsyncClient(timeout=5) as http:
        for _ in range(2):
            readers: list[AsyncIterator[str]] = []
            async with contextlib.AsyncExitStack() as streams:
                for _ in range(MAX_SUBSCRIPTIONS):
                    deadline = time.monotonic() + 2  # the gateway hears the last round leave
                    while True:
                        response = await streams.enter_async_context(
                            http.stream(
                                "POST", gateway.http_url, content=LISTEN_BODY, headers=headers
                            )
                        )
                        if response.status_code != 429 or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.05)
                    assert response.status_code == 200
                    events = data_lines(response)
                    readers.append(events)  # dropping it would close the response
                    assert "notifications/subscriptions/acknowledged" in await anext(events)
                over = await http.post(gateway.http_url, content=LISTEN_BODY, headers=headers)
                assert over.status_code == 429


async def test_revoking_the_token_ends_its_streams_within_a_second(gateway: Gateway):
    name, token = await new_agent(gateway)
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(timeout=5) as http:
        init = await http.post(
            gateway.http_url,
            content=jsonrpc("initialize", {"protocolVersion": "2025-11-25"}),
            headers={**auth, "Content-Type": "application/json"},
        )
        session = {"Mcp-Session-Id": init.headers["Mcp-Session-Id"], "Accept": "text/event-stream"}
        async with (
            http.stream("GET", gateway.http_url, headers={**auth, **session}) as get,
            http.stream(
                "POST", gateway.http_url, content=LISTEN_BODY, headers={**auth, **LISTEN_HEADERS}
            ) as listen,
        ):
            assert get.headers["Content-Type"] == "text/event-stream"
            get_events, listen_events = data_lines(get), data_lines(listen)
            assert await anext(get_events) == "data: "  # the primer
            assert "acknowledged" in await anext(listen_events)
            await asyncio.to_thread(
                gateway.manage, "token_revoke", "--tenant", "acme", "--agent", name
            )
            committed_at = time.monotonic()

            async def rest(events: AsyncIterator[str]) -> list[str]:
                return [line async for line in events]

            get_rest, listen_rest = await asyncio.wait_for(
                asyncio.gather(rest(get_events), rest(listen_events)), 5
            )
            elapsed = time.monotonic() - committed_at
    assert get_rest == []
    assert len(listen_rest) == 1
    assert '"error":{"code":-32010,"message":"unauthorized: token revoked"}' in listen_rest[0]
    assert elapsed < 1.0, f"ended {elapsed:.2f} s after the revocation committed"
