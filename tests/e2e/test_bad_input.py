"""Bad input of every kind gets a clear JSON-RPC error (or a documented status / close code),
the offending connection survives where the protocol allows, and nobody else notices."""

from __future__ import annotations

import asyncio
import json

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.conftest import Gateway, jsonrpc, mcp_client

pytestmark = pytest.mark.e2e

MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}


def auth(gateway: Gateway, agent: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {gateway.tokens[agent]}"}


async def ws_session(gateway: Gateway, agent: str = "alice"):
    return connect(
        gateway.ws_url,
        subprotocols=["mcp"],
        additional_headers=auth(gateway, agent),
        max_size=None,
    )


async def rpc(ws, message: str) -> dict:
    await ws.send(message)
    return json.loads(await asyncio.wait_for(ws.recv(), 10))


BAD_FRAMES = [
    ("{not json", -32700, "parse error"),
    ('"a string"', -32600, "must be a JSON object, got str"),
    ("[1, 2]", -32600, "batches are not supported"),
    ('[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', -32600, "batches are not supported"),
    ('{"jsonrpc": "1.0", "id": 1, "method": "ping"}', -32600, '"jsonrpc"'),
    ('{"jsonrpc": "2.0", "id": 1}', -32600, 'needs a "method"'),
    ('{"jsonrpc": "2.0", "id": 1, "method": 7}', -32600, '"method" must be'),
    ('{"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": [1]}', -32602, "params"),
    ('{"jsonrpc": "2.0", "id": true, "method": "ping"}', -32600, '"id" must be'),
    ('{"jsonrpc": "2.0", "id": 1, "method": "ping", "x": NaN}', -32700, "NaN"),
    ("[" * 60_000, -32700, "parse error"),  # deep nesting, under the size limit
]


@pytest.mark.parametrize(("frame", "code", "text"), BAD_FRAMES)
async def test_bad_ws_frames_get_errors_and_the_connection_survives(gateway, frame, code, text):
    async with await ws_session(gateway) as ws:
        reply = await rpc(ws, frame)
        assert reply["error"]["code"] == code
        assert text in reply["error"]["message"]
        # Still usable afterwards.
        ok = await rpc(ws, jsonrpc("initialize", {"protocolVersion": "2025-11-25"}, id=2))
        assert ok["result"]["protocolVersion"] == "2025-11-25"


async def test_ws_protocol_misuse_gets_errors(gateway: Gateway):
    async with await ws_session(gateway) as ws:
        before_init = await rpc(ws, jsonrpc("tools/list", id=1))
        assert before_init["error"]["code"] == -32600
        assert "initialize" in before_init["error"]["message"]
        await rpc(ws, jsonrpc("initialize", {"protocolVersion": "1999-01-01"}, id=2))
        unknown = await rpc(ws, jsonrpc("resources/list", id=3))
        assert unknown["error"]["code"] == -32601
        no_name = await rpc(ws, jsonrpc("tools/call", {"arguments": {}}, id=4))
        assert no_name["error"]["code"] == -32602
        bad_args = await rpc(ws, jsonrpc("tools/call", {"name": "time__x", "arguments": [1]}, id=5))
        assert bad_args["error"]["code"] == -32602
        bad_cursor = await rpc(ws, jsonrpc("tools/list", {"cursor": "%%%"}, id=6))
        assert bad_cursor["error"]["code"] == -32602
        await ws.send(b"\x00binary")
        binary = json.loads(await ws.recv())
        assert "binary frames are not supported" in binary["error"]["message"]
        assert (await rpc(ws, jsonrpc("ping", id=7)))["result"] == {}


async def test_ws_eras_do_not_mix(gateway: Gateway):
    async with await ws_session(gateway) as ws:
        modern = await rpc(ws, jsonrpc("tools/list", {"_meta": META}, id=1))
        assert modern["result"]["resultType"] == "complete"
        init = await rpc(ws, jsonrpc("initialize", {"protocolVersion": "2025-11-25"}, id=2))
        assert init["error"]["code"] == -32022
        no_meta = await rpc(ws, jsonrpc("tools/list", id=3))
        assert no_meta["error"]["code"] == -32602
        wrong = {**META, "io.modelcontextprotocol/protocolVersion": "2030-01-01"}
        unsupported = await rpc(ws, jsonrpc("tools/list", {"_meta": wrong}, id=4))
        assert unsupported["error"]["code"] == -32022
        assert unsupported["error"]["data"]["requested"] == "2030-01-01"


async def test_oversized_ws_frame_gets_an_error_and_the_connection_survives(gateway: Gateway):
    big = jsonrpc("tools/call", {"name": "testkit__echo", "arguments": {"text": "x" * 70_000}})
    async with await ws_session(gateway) as ws:
        reply = await rpc(ws, big)
        assert reply["error"]["code"] == -32600
        assert "message too large" in reply["error"]["message"]
        assert "65536" in reply["error"]["message"]
        assert (await rpc(ws, jsonrpc("initialize", {"protocolVersion": "2025-11-25"})))["result"]


async def test_frame_above_the_transport_cap_closes_with_1009(gateway: Gateway):
    async with await ws_session(gateway) as ws:
        await ws.send("x" * (4 * 64 * 1024 + 10))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd.code == 1009


async def test_duplicate_inflight_request_id_is_refused(gateway: Gateway):
    async with await ws_session(gateway) as ws:
        await rpc(ws, jsonrpc("initialize", {"protocolVersion": "2025-11-25"}, id=0))
        call = {"name": "testkit__sleep", "arguments": {"seconds": 0.5}}
        await ws.send(jsonrpc("tools/call", call, id=9))
        await ws.send(jsonrpc("tools/call", call, id=9))
        first = json.loads(await ws.recv())
        assert first["id"] == 9
        assert "already in use" in first["error"]["message"]
        second = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert second["result"]["content"][0]["text"] == "slept 0.5"


async def test_ws_cancellation_stops_the_call_and_is_audited(gateway: Gateway):
    async with await ws_session(gateway) as ws:
        await rpc(ws, jsonrpc("initialize", {"protocolVersion": "2025-11-25"}, id=0))
        await ws.send(
            jsonrpc(
                "tools/call", {"name": "testkit__sleep", "arguments": {"seconds": 1.7}}, id="c1"
            )
        )
        await asyncio.sleep(0.3)
        await ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": "c1", "reason": "changed my mind"},
                }
            )
        )
        # No response is due for a cancelled request; the next one is answered normally.
        assert (await rpc(ws, jsonrpc("ping", id=2)))["id"] == 2
    rows = gateway.wait_for_audit("json_extract(arguments, '$.seconds') = 1.7", (), 2)
    assert [r["outcome"] for r in rows] == ["", "cancelled"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "unknown token"),
        ({"Authorization": "Bearer wa_nope"}, "unknown token"),
        ({"Authorization": "Basic abc"}, "unknown token"),
    ],
)
async def test_ws_bad_token_closes_4401(gateway: Gateway, headers, reason):
    async with connect(gateway.ws_url, subprotocols=["mcp"], additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd.code == 4401
    assert reason in closed.value.rcvd.reason


async def test_ws_without_mcp_subprotocol_is_refused(gateway: Gateway):
    with pytest.raises(InvalidStatus) as refused:
        async with connect(gateway.ws_url, additional_headers=auth(gateway)):
            pass
    assert refused.value.response.status_code == 403


# --- streamable HTTP -----------------------------------------------------------------------
async def post(gateway: Gateway, body: str | bytes, headers: dict[str, str] | None = None):
    async with httpx2.AsyncClient() as http:
        return await http.post(
            gateway.http_url,
            content=body,
            headers={"Content-Type": "application/json", **auth(gateway), **(headers or {})},
        )


@pytest.mark.parametrize(("frame", "code", "text"), BAD_FRAMES[:9])
async def test_bad_http_bodies_get_400_and_a_clear_error(gateway, frame, code, text):
    response = await post(gateway, frame)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert text in response.json()["error"]["message"]


async def test_http_errors_are_documented_statuses(gateway: Gateway):
    async with httpx2.AsyncClient() as http:
        no_token = await http.post(
            gateway.http_url, content=jsonrpc("ping"), headers={"Content-Type": "application/json"}
        )
        assert no_token.status_code == 401
        assert no_token.json()["error"]["code"] == -32010
        assert "Bearer" in no_token.headers["WWW-Authenticate"]
        get = await http.get(gateway.http_url, headers=auth(gateway))
        assert get.status_code == 405
        evil = await http.post(
            gateway.http_url,
            content=jsonrpc("ping"),
            headers={
                **auth(gateway),
                "Origin": "https://evil.example",
                "Content-Type": "application/json",
            },
        )
        assert evil.status_code == 403
    text_plain = await post(gateway, jsonrpc("ping"), {"Content-Type": "text/plain"})
    assert text_plain.status_code == 415
    too_big = await post(gateway, "x" * 70_000)
    assert too_big.status_code == 413
    assert "message too large" in too_big.json()["error"]["message"]
    no_session = await post(gateway, jsonrpc("tools/list"))
    assert no_session.status_code == 400
    assert "Mcp-Session-Id" in no_session.json()["error"]["message"]
    forged = await post(gateway, jsonrpc("tools/list"), {"Mcp-Session-Id": "forged"})
    assert forged.status_code == 404


async def test_http_session_is_bound_to_its_token(gateway: Gateway):
    init = await post(gateway, jsonrpc("initialize", {"protocolVersion": "2025-06-18"}))
    session = init.headers["Mcp-Session-Id"]
    assert init.json()["result"]["protocolVersion"] == "2025-06-18"
    mine = await post(gateway, jsonrpc("tools/list", id=2), {"Mcp-Session-Id": session})
    assert mine.status_code == 200
    async with httpx2.AsyncClient() as http:
        theirs = await http.post(
            gateway.http_url,
            content=jsonrpc("tools/list", id=2),
            headers={
                "Content-Type": "application/json",
                "Mcp-Session-Id": session,
                **auth(gateway, "bob"),
            },
        )
    assert theirs.status_code == 404


async def test_http_stateless_headers_must_match_the_body(gateway: Gateway):
    body = jsonrpc(
        "tools/call",
        {"name": "time__get_current_time", "arguments": {"timezone": "UTC"}, "_meta": META},
    )
    good = {
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "time__get_current_time",
    }
    ok = await post(gateway, body, good)
    assert ok.status_code == 200
    assert ok.json()["result"]["resultType"] == "complete"
    for header, value in [("Mcp-Method", "tools/list"), ("Mcp-Name", "time__convert_time")]:
        mismatch = await post(gateway, body, {**good, header: value})
        assert mismatch.status_code == 400
        assert mismatch.json()["error"]["code"] == -32020


async def test_a_flood_of_bad_input_harms_no_other_agent(gateway: Gateway):
    async def flood():
        async with await ws_session(gateway, "carol") as ws:
            for i in range(300):
                await ws.send(BAD_FRAMES[i % 9][0])
                await ws.recv()

    async with mcp_client(gateway, gateway.tokens["bob"], transport="ws") as c:
        flooding = asyncio.ensure_future(flood())
        results = []
        while not flooding.done():
            results.append(await c.call_tool("time__get_current_time", {"timezone": "UTC"}))
        await flooding
    assert results
    assert all(not r.is_error for r in results)
