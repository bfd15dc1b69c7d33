"""The governed tool call end to end: the official mcp SDK client, a real gateway process,
the real mcp-server-time upstream over stdio, and the audit trail read back."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.conftest import Gateway, list_all, mcp_client

pytestmark = pytest.mark.e2e

TRANSPORTS_AND_ERAS = [
    ("http", "legacy", "2025-11-25"),
    ("http", "2026-07-28", "2026-07-28"),
    ("http", "auto", "2026-07-28"),
    ("ws", "legacy", "2025-11-25"),
    ("ws", "2026-07-28", "2026-07-28"),
    ("ws", "auto", "2026-07-28"),
]


@pytest.mark.parametrize(("transport", "mode", "version"), TRANSPORTS_AND_ERAS)
async def test_list_and_call_time_tool_is_audited(gateway: Gateway, transport, mode, version):
    async with mcp_client(gateway, gateway.tokens["alice"], transport=transport, mode=mode) as c:
        assert c.protocol_version == version
        # Page size is 2 in this gateway: the list comes in pages, in name order. (Tools that
        # another test adds at run time are named late_*.)
        assert [n for n in await list_all(c) if "__late_" not in n] == [
            "testkit__crash",
            "testkit__echo",
            "testkit__grow",
            "testkit__pid",
            "testkit__sleep",
            "testkit__visit",
            "time__convert_time",
            "time__get_current_time",
        ]
        zone = "Europe/Paris" if transport == "ws" else "Asia/Tokyo"
        result = await c.call_tool("time__get_current_time", {"timezone": zone})
    assert not result.is_error
    assert result.structured_content["timezone"] == zone

    rows = gateway.wait_for_audit(
        "tool = ? AND json_extract(arguments, '$.timezone') = ? AND transport = ? "
        "AND protocol_version = ?",
        ("time__get_current_time", zone, transport, version),
        2,
    )
    intent, outcome = rows[-2], rows[-1]
    assert (intent["kind"], outcome["kind"]) == ("intent", "outcome")
    assert intent["call_id"] == outcome["call_id"]
    assert intent["id"] < outcome["id"]
    assert outcome["agent_name"] == "alice"
    assert outcome["decision"] == "allow"
    assert outcome["rule_id"] is not None
    assert outcome["outcome"] == "ok"
    assert outcome["protocol_era"] == ("stateless" if version == "2026-07-28" else "handshake")
    assert len(outcome["result_digest"]) == 64
    assert outcome["latency_us"] > 0


async def test_tools_list_shows_only_allowed_tools(gateway: Gateway):
    async with mcp_client(gateway, gateway.tokens["bob"]) as c:
        assert await list_all(c) == ["time__get_current_time"]


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_tool_without_an_allow_rule_is_refused_and_audited(gateway: Gateway, transport):
    marker = f"Pacific/Auckland-{transport}"
    async with mcp_client(gateway, gateway.tokens["bob"], transport=transport) as c:
        with pytest.raises(MCPError) as refused:
            await c.call_tool(
                "time__convert_time",
                {"source_timezone": marker, "time": "12:00", "target_timezone": "UTC"},
            )
        assert refused.value.code == -32001
        assert "permission denied" in refused.value.error.message
        # The connection is still good for what bob may do.
        ok = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not ok.is_error
    rows = gateway.wait_for_audit("json_extract(arguments, '$.source_timezone') = ?", (marker,), 2)
    assert [r["kind"] for r in rows] == ["intent", "outcome"]
    assert all(r["decision"] == "deny" and r["agent_name"] == "bob" for r in rows)
    assert rows[1]["outcome"] == "denied"
    assert rows[1]["reason"] == "no rule allows tool 'time__convert_time' for this agent"
    assert rows[1]["rule_id"] is None


async def test_unknown_tool_is_refused_and_audited(gateway: Gateway):
    name = f"nosuch__tool_{uuid.uuid4().hex[:8]}"
    async with mcp_client(gateway, gateway.tokens["alice"], mode="legacy") as c:
        with pytest.raises(MCPError) as refused:
            await c.call_tool(name, {})
    assert refused.value.code == -32602
    assert name in refused.value.error.message
    rows = gateway.wait_for_audit("tool = ?", (name,), 2)
    assert [(r["kind"], r["outcome"]) for r in rows] == [("intent", ""), ("outcome", "denied")]
    assert rows[0]["reason"] == "unknown tool"


async def test_tool_error_passes_through_as_is_error(gateway: Gateway):
    async with mcp_client(gateway, gateway.tokens["alice"], transport="ws") as c:
        result = await c.call_tool("time__get_current_time", {"timezone": "Nowhere/Atlantis"})
    assert result.is_error
    rows = gateway.wait_for_audit(
        "json_extract(arguments, '$.timezone') = ?", ("Nowhere/Atlantis",), 2
    )
    assert rows[-1]["outcome"] == "tool_error"
    assert "Nowhere/Atlantis" in rows[-1]["error"]


async def test_concurrent_calls_share_one_upstream_session(gateway: Gateway):
    texts = [f"concurrent-{uuid.uuid4().hex[:6]}-{i}" for i in range(20)]
    async with (
        mcp_client(gateway, gateway.tokens["alice"], transport="ws") as c1,
        mcp_client(gateway, gateway.tokens["alice"], transport="http") as c2,
    ):
        results = await asyncio.gather(*(c1.call_tool("testkit__echo", {"text": t}) for t in texts))
        pids = await asyncio.gather(
            *(c.call_tool("testkit__pid", {}) for c in (c1, c2) for _ in range(10))
        )
    assert [r.content[0].text for r in results] == texts
    # Twenty calls from two agents' connections: one upstream process served them all.
    assert len({p.structured_content["result"] for p in pids}) == 1


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_upstream_timeout_is_a_clear_error_and_spares_other_calls(
    gateway: Gateway, transport
):
    seconds = 30 + (1 if transport == "ws" else 2)  # unique argument, far above the deadline
    async with mcp_client(gateway, gateway.tokens["alice"], transport=transport) as c:
        slow = asyncio.ensure_future(c.call_tool("testkit__sleep", {"seconds": seconds}))
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        quick = await c.call_tool("time__get_current_time", {"timezone": "UTC"})
        assert not quick.is_error
        assert loop.time() - started < 1.5  # not queued behind the slow call
        with pytest.raises(MCPError) as timed_out:
            await slow
    assert timed_out.value.code == -32004
    assert "did not answer within 2 s" in timed_out.value.error.message
    rows = gateway.wait_for_audit("json_extract(arguments, '$.seconds') = ?", (seconds,), 2)
    assert rows[-1]["outcome"] == "timeout"


async def test_upstream_crash_mid_call_then_reconnects(gateway: Gateway):
    async with mcp_client(gateway, gateway.tokens["alice"], transport="ws") as c:
        with pytest.raises(MCPError) as crashed:
            await c.call_tool("testkit__crash", {})
        assert crashed.value.code == -32003
        assert "disconnected" in crashed.value.error.message
        # The pool reconnects with backoff; a later call goes through on the new session.
        marker = f"after-crash-{uuid.uuid4().hex[:6]}"
        refusals = []
        for _ in range(50):
            try:
                result = await c.call_tool("testkit__echo", {"text": marker})
                break
            except MCPError as exc:
                refusals.append(exc.code)
                await asyncio.sleep(0.2)
        else:
            pytest.fail("the upstream never came back")
        assert set(refusals) <= {-32003}  # while reconnecting: "upstream unavailable", only
        assert result.content[0].text == marker
    crash_rows = gateway.audit("tool = 'testkit__crash' AND kind = 'outcome'")
    assert crash_rows[-1]["outcome"] == "upstream_down"


async def test_audit_tail_json_shows_intent_and_outcome(gateway: Gateway):
    marker = "America/Sao_Paulo"
    async with mcp_client(gateway, gateway.tokens["dave"], mode="legacy") as c:
        await c.call_tool("time__get_current_time", {"timezone": marker})
    gateway.wait_for_audit("json_extract(arguments, '$.timezone') = ?", (marker,), 2)
    out = gateway.manage("audit_tail", "--tenant", "acme", "-n", "500", "--json").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    mine = [r for r in rows if r["arguments"] == {"timezone": marker}]
    assert [r["kind"] for r in mine] == ["intent", "outcome"]
    expected_keys = {
        "call_id",
        "tenant",
        "agent",
        "transport",
        "protocol_era",
        "protocol_version",
        "request_id",
        "tool",
        "arguments",
        "decision",
        "reason",
        "rule_id",
        "guardrails",
        "flagged",
        "outcome",
        "result_digest",
        "latency_us",
        "seq",
        "prev_hash",
        "hash",
        "started_at",
        "created_at",
    }
    assert expected_keys <= set(mine[1])
    assert mine[1]["tenant"] == "acme"
    assert mine[1]["agent"] == "dave"
    assert mine[1]["outcome"] == "ok"
