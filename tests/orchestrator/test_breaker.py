"""The circuit breaker of an upstream: its state machine on a fake clock, then an ``Upstream``
over a real in-memory MCP server whose tool hangs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from governance.engine.types import ServerSpec
from orchestrator.upstream import pool
from orchestrator.upstream.pool import (
    Breaker,
    Upstream,
    UpstreamCircuitOpen,
    UpstreamDown,
    UpstreamRpcError,
    UpstreamTimeout,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, failures: int = 3) -> Breaker:
    return Breaker(failures=failures, reset_seconds=5.0, clock=clock)


def fail(b: Breaker, times: int = 1) -> None:
    for _ in range(times):
        admission = b.admit()
        assert admission is not None
        b.settle(admission, ok=False)


def test_opens_after_failures_in_a_row_and_refuses_calls(clock: Clock):
    b = breaker(clock)
    fail(b, 2)
    assert b.state == "closed"
    assert b.admit() == "call"
    assert b.settle("call", ok=False) == "opened"
    assert (b.state, b.in_a_row, b.retry_in()) == ("open", 3, 5.0)
    clock.now += 4.9
    assert b.admit() is None
    assert b.retry_in() == pytest.approx(0.1)


def test_an_answer_between_failures_resets_the_count(clock: Clock):
    b = breaker(clock)
    fail(b, 2)
    assert b.settle("call", ok=True) is None  # closed already: no change
    fail(b, 2)
    assert (b.state, b.in_a_row) == ("closed", 2)


def test_half_open_lets_exactly_one_trial_through_and_its_success_closes(clock: Clock):
    b = breaker(clock)
    fail(b, 3)
    clock.now += 5.0
    assert b.state == "half_open"
    assert b.admit() == "trial"
    assert [b.admit() for _ in range(3)] == [None, None, None]  # the trial is under way
    assert b.retry_in() == 0.0
    assert b.settle("trial", ok=True) == "closed"
    assert (b.state, b.in_a_row) == ("closed", 0)
    assert b.admit() == "call"


def test_a_failed_trial_opens_it_again_for_the_full_reset_time(clock: Clock):
    b = breaker(clock)
    fail(b, 3)
    clock.now += 6.0
    assert b.admit() == "trial"
    clock.now += 1.5  # the trial took a while to time out
    assert b.settle("trial", ok=False) == "opened"
    assert (b.state, b.in_a_row, b.retry_in()) == ("open", 4, 5.0)
    clock.now += 5.0
    assert b.admit() == "trial"


def test_a_trial_without_a_verdict_hands_the_trial_to_the_next_call(clock: Clock):
    b = breaker(clock)
    fail(b, 3)
    clock.now += 5.0
    assert b.admit() == "trial"
    assert b.settle("trial", ok=None) is None  # cancelled: says nothing about the upstream
    assert b.state == "half_open"
    assert b.admit() == "trial"


def test_a_late_answer_from_a_call_let_through_before_it_opened_closes_it(clock: Clock):
    b = breaker(clock)
    assert b.admit() == "call"  # a slow call, still running
    fail(b, 3)
    assert b.settle("call", ok=True) == "closed"  # the upstream answers after all
    assert b.admit() == "call"


def test_late_failures_while_open_do_not_push_the_trial_back(clock: Clock):
    b = breaker(clock)
    late = [b.admit() for _ in range(5)]
    for admission in late[:3]:
        assert admission is not None
        b.settle(admission, ok=False)
    clock.now += 2.0
    for admission in late[3:]:
        assert admission is not None
        assert b.settle(admission, ok=False) is None
    assert b.retry_in() == 3.0


# --- an Upstream over a real MCP session (in memory) ----------------------------------------

SPEC = ServerSpec(id=1, tenant_id=1, name="victim", transport="stdio", command="in-memory")


def victim_server() -> tuple[MCPServer, asyncio.Event]:
    server = MCPServer("victim")
    released = asyncio.Event()

    @server.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Answer once released.")
    async def hang() -> str:
        await released.wait()
        return "released"

    @server.tool(description="A tool failure (isError).")
    def broken() -> str:
        raise ToolError("broken on purpose")

    @server.tool(description="A JSON-RPC error.")
    def refuse() -> str:
        raise MCPError(-32050, "refused on purpose")  # not -32000: the SDK's "closed"

    return server, released


@pytest.fixture
async def victim(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Upstream, asyncio.Event]]:
    server, released = victim_server()
    monkeypatch.setattr(pool, "_transport", lambda spec: server)

    async def on_catalog(spec: ServerSpec, tools: list[dict[str, Any]]) -> None:
        return None

    upstream = Upstream(
        SPEC,
        on_catalog=on_catalog,
        backoff_initial=0.01,
        backoff_max=0.05,
        watch_seconds=30.0,
        breaker=Breaker(failures=2, reset_seconds=5.0, clock=clock),
    )
    upstream.start()
    yield upstream, released
    released.set()
    await upstream.stop()


async def call(upstream: Upstream, tool: str, **arguments: Any) -> dict[str, Any]:
    return await upstream.call_tool(tool, arguments, deadline=0.2)


async def reconnected(upstream: Upstream, connects: int) -> None:
    for _ in range(200):
        if upstream.connects >= connects:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"no reconnect: {upstream.connects} connects")


async def test_upstream_hung_opens_breaker_fails_fast_reconnects_and_trial_closes(
    victim: tuple[Upstream, asyncio.Event], clock: Clock
):
    upstream, _ = victim
    assert (await call(upstream, "echo", text="up"))["content"][0]["text"] == "up"
    for _ in range(2):
        with pytest.raises(UpstreamTimeout):
            await call(upstream, "hang")
    assert upstream.breaker.state == "open"
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamCircuitOpen) as refused:
        await call(upstream, "echo", text="refused")
    assert loop.time() - started < 0.05
    assert refused.value.outcome == "upstream_down"
    assert isinstance(refused.value, UpstreamDown)
    assert str(refused.value) == (
        "upstream 'victim' is failing (2 calls in a row timed out or found it down); "
        "calls fail fast until a trial call in 5.0 s succeeds"
    )
    await reconnected(upstream, 2)  # the wedged session was dropped for a fresh one
    clock.now += 5.0
    assert (await call(upstream, "echo", text="trial"))["content"][0]["text"] == "trial"
    assert upstream.breaker.state == "closed"


async def test_upstream_answers_of_any_kind_reset_the_count(
    victim: tuple[Upstream, asyncio.Event],
):
    upstream, _ = victim
    for _ in range(2):
        with pytest.raises(UpstreamTimeout):
            await call(upstream, "hang")
        assert (await call(upstream, "broken"))["isError"] is True
        with pytest.raises(UpstreamTimeout):
            await call(upstream, "hang")
        with pytest.raises(UpstreamRpcError):
            await call(upstream, "refuse")
    assert (upstream.breaker.state, upstream.connects) == ("closed", 1)


async def test_upstream_cancelled_trial_leaves_the_breaker_half_open(
    victim: tuple[Upstream, asyncio.Event], clock: Clock
):
    upstream, _ = victim
    for _ in range(2):
        with pytest.raises(UpstreamTimeout):
            await call(upstream, "hang")
    await reconnected(upstream, 2)
    clock.now += 5.0
    trial = asyncio.ensure_future(call(upstream, "hang"))
    await asyncio.sleep(0.05)
    with pytest.raises(UpstreamCircuitOpen, match="trial call now under way"):
        await call(upstream, "echo", text="while the trial runs")
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert (await call(upstream, "echo", text="next trial"))["content"][0]["text"]
    assert upstream.breaker.state == "closed"
