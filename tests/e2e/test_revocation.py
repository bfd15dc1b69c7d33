"""Revoking a token closes its live connections within a second, from another process."""

from __future__ import annotations

import asyncio
import time

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.conftest import Gateway, jsonrpc

pytestmark = pytest.mark.e2e


async def test_revoking_a_token_closes_its_connections_within_one_second(gateway: Gateway):
    out = gateway.manage("agent_create", "--tenant", "acme", "erin").stdout
    token = out.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    await asyncio.sleep(0.5)  # the gateway learns of the new token on its next poll
    async with connect(gateway.ws_url, subprotocols=["mcp"], additional_headers=headers) as ws:
        await ws.send(jsonrpc("initialize", {"protocolVersion": "2025-11-25"}))
        assert "result" in (await ws.recv())
        revoked = await asyncio.to_thread(
            gateway.manage, "token_revoke", "--tenant", "acme", "--agent", "erin"
        )
        committed_at = time.monotonic()
        assert "revoked 1 token" in revoked.stdout
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        elapsed = time.monotonic() - committed_at
    assert closed.value.rcvd.code == 4401
    assert "token revoked" in closed.value.rcvd.reason
    assert elapsed < 1.0, f"closed {elapsed:.2f} s after the revocation committed"
    async with httpx2.AsyncClient() as http:
        refused = await http.post(
            gateway.http_url,
            content=jsonrpc("ping"),
            headers={**headers, "Content-Type": "application/json"},
        )
    assert refused.status_code == 401
    assert "token revoked" in refused.json()["error"]["message"]
