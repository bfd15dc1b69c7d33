"""The kill test: a real gateway with a healthy upstream (mcp-server-time over stdio) and
victims that hang or die, driven by the official mcp SDK client.

- ``stuck``: testkit over streamable HTTP, a process of ours; SIGSTOP makes it hang (the
  kernel still accepts its connections), SIGCONT brings it back.
- ``gone``: the same, SIGKILLed: nobody restarts it.
- ``wedged``: testkit over stdio, a child of the gateway; SIGSTOP makes it hang, and the
  gateway itself must replace it.

Each shows the breaker: the first calls time out (or find it down), then calls fail fast with
-32003, a trial after the reset time closes it again or finds it still failing, and calls to
the healthy upstream meanwhile keep their latency. Run with ``-s`` to see the medians."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from tests.e2e.conftest import ROOT, TESTKIT, Gateway, mcp_client, start_server, stop_server

pytestmark = pytest.mark.e2e

CALL_TIMEOUT = 1.5
FAILURES = 3
RESET = 3.0
FAST = 0.5  # a refused call, and a call to the healthy upstream, answer well within this
UNAVAILABLE, TIMED_OUT = -32003, -32004
OPEN = re.compile(
    r"upstream '(\w+)' is failing \((\d+) calls in a row timed out or found it down\); "
    r"calls fail fast until a trial call (in \d+\.\d s|now under way) succeeds"
)


def http_testkit() -> tuple[subprocess.Popen[str], str]:
    """testkit serving streamable HTTP on a free loopback port: the process and its URL."""
    process = subprocess.Popen(
        [sys.executable, str(TESTKIT), "--http"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 20)
    line = process.stdout.readline() if ready else ""
    if not (match := re.search(r"listening on (http://\S+)", line)):
        process.kill()
        raise AssertionError(f"testkit over HTTP did not start: {line!r}")
    return process, match.group(1)


SETUP = """
import io, json, os
from django.core.management import call_command

outputs = []
for command in json.loads(os.environ["SETUP_COMMANDS"]):
    out = io.StringIO()
    call_command(*command, stdout=out)
    outputs.append(out.getvalue())
print(json.dumps(outputs))
"""


@dataclass
class Failing:
    gateway: Gateway
    token: str
    victims: dict[str, subprocess.Popen[str]]


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Failing]:
    data_dir = tmp_path_factory.mktemp("upstream-failure")
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "MCP_CALL_TIMEOUT_SECONDS": str(CALL_TIMEOUT),
        "UPSTREAM_BREAKER_FAILURES": str(FAILURES),
        "UPSTREAM_BREAKER_RESET_SECONDS": str(RESET),
        "UPSTREAM_BACKOFF_INITIAL": "0.1",
        "UPSTREAM_BACKOFF_MAX": "0.5",
        # No idle re-listing during the test: what notices a hung session is the breaker.
        "UPSTREAM_WATCH_SECONDS": "60",
        "GOVERNANCE_POLL_SECONDS": "0.25",
        "PYTHONPATH": str(ROOT),
    }
    victims = {name: http_testkit() for name in ("stuck", "gone")}
    gateway = Gateway(data_dir=data_dir, env=env)
    py = sys.executable
    commands = [
        ["migrate", "-v0"],
        ["tenant_create", "acme"],
        ["agent_create", "--tenant", "acme", "alice"],
        ["toolserver_add", "--tenant", "acme", "time", "--command", f"{py} -m mcp_server_time"],
        ["toolserver_add", "--tenant", "acme", "wedged", "--command", f"{py} {TESTKIT}"],
        *(
            ["toolserver_add", "--tenant", "acme", name, "--url", url]
            for name, (_, url) in victims.items()
        ),
        ["rule_add", "--tenant", "acme", "--agent", "alice", "--tool", "*"],
    ]
    # One process runs the bootstrap commands: a Django start-up each would cost seconds.
    setup = Gateway(data_dir=data_dir, env={**env, "SETUP_COMMANDS": json.dumps(commands)})
    outputs = json.loads(setup.manage("shell", "-c", SETUP).stdout.splitlines()[-1])
    start_server(gateway)
    try:
        yield Failing(
            gateway,
            token=outputs[2].strip().splitlines()[-1],
            victims={name: process for name, (process, _) in victims.items()},
        )
    finally:
        stop_server(gateway)
        for process in (process for process, _ in victims.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait(timeout=10)


async def timed(call: Awaitable[Any]) -> tuple[float, Any]:
    """(seconds, result) of a call, the MCPError it raised standing in for its result."""
    started = time.monotonic()
    try:
        result: Any = await call
    except MCPError as exc:
        result = exc
    return time.monotonic() - started, result


async def healthy_call(client: Client) -> float:
    """Seconds a call to the healthy upstream took; it must succeed."""
    seconds, result = await timed(client.call_tool("time__get_current_time", {"timezone": "UTC"}))
    assert not isinstance(result, MCPError), result
    assert not result.is_error, result
    return seconds


async def healthy_latencies(client: Client, until: asyncio.Future[Any]) -> list[float]:
    """Call the healthy upstream over and over until ``until`` is done (at most 400 calls)."""
    latencies = []
    for _ in range(400):
        if until.done():
            break
        latencies.append(await healthy_call(client))
        await asyncio.sleep(0.02)
    return latencies


async def healthy_median(client: Client, calls: int = 20) -> float:
    return statistics.median([await healthy_call(client) for _ in range(calls)])


def report(label: str, before: float, during: list[float]) -> None:
    middle = statistics.median(during)
    print(
        f"\n{label}: healthy upstream median {before * 1000:.1f} ms before, "
        f"{middle * 1000:.1f} ms during (n={len(during)}, max {max(during) * 1000:.1f} ms)"
    )
    assert max(during) < FAST
    assert middle <= 3 * before + 0.02  # not queued behind the failing upstream


def refused(result: Any, seconds: float) -> re.Match[str]:
    """The call was refused at once by an open breaker."""
    assert isinstance(result, MCPError), result
    assert result.code == UNAVAILABLE
    assert seconds < FAST
    match = OPEN.fullmatch(result.error.message)
    assert match, result.error.message
    return match


async def calls_time_out(client: Client, tool: str, text: str) -> float:
    """The first FAILURES calls to a hung upstream each wait out the call timeout; returns
    when the breaker opened (the monotonic time the last one returned)."""
    for _ in range(FAILURES):
        seconds, result = await timed(client.call_tool(tool, {"text": text}))
        assert isinstance(result, MCPError), result
        assert result.code == TIMED_OUT, result
        assert CALL_TIMEOUT - 0.05 < seconds < CALL_TIMEOUT + 1.0
    return time.monotonic()


async def recovered(client: Client, tool: str, opened: float) -> tuple[float, Any]:
    """Call until the breaker lets a call through and it succeeds: (seconds after the breaker
    opened, result). Refused or failed trials in between are all "unavailable" or time out."""
    for _ in range(60):
        _, result = await timed(client.call_tool(tool, {}))
        if not isinstance(result, MCPError):
            return time.monotonic() - opened, result
        assert result.code in (UNAVAILABLE, TIMED_OUT), result
        if time.monotonic() - opened > 20:
            break
        await asyncio.sleep(0.2)
    pytest.fail(f"{tool} never recovered")


def outcomes(gateway: Gateway, tool: str, count: int) -> list[str]:
    rows = gateway.wait_for_audit("tool = ? AND kind = 'outcome'", (tool,), count)
    return [row["outcome"] for row in rows]


async def test_hung_upstream_fails_fast_spares_the_healthy_one_and_recovers(failing: Failing):
    gateway, stuck = failing.gateway, failing.victims["stuck"]
    async with (
        mcp_client(gateway, failing.token) as victim,
        mcp_client(gateway, failing.token) as healthy,
    ):
        assert (await victim.call_tool("stuck__echo", {"text": "up"})).content[0].text == "up"
        before = await healthy_median(healthy)
        stuck.send_signal(signal.SIGSTOP)
        try:

            async def hang_then_refuse() -> float:
                opened = await calls_time_out(victim, "stuck__echo", "hung")
                for _ in range(5):
                    seconds, result = await timed(victim.call_tool("stuck__echo", {"text": "x"}))
                    assert refused(result, seconds).group(1, 2) == ("stuck", str(FAILURES))
                return opened

            async with asyncio.TaskGroup() as group:
                victim_calls = group.create_task(hang_then_refuse())
                during = await healthy_latencies(healthy, victim_calls)
            opened = victim_calls.result()
        finally:
            stuck.send_signal(signal.SIGCONT)
        report("stuck (SIGSTOP)", before, during)
        after, result = await recovered(victim, "stuck__pid", opened)
        print(f"stuck: first call through {after:.2f} s after the breaker opened")
    assert result.structured_content["result"] == stuck.pid  # the same process, continued
    assert after >= RESET - 0.1  # not before the trial was due
    seen = outcomes(gateway, "stuck__echo", 1 + FAILURES + 5)
    assert seen == ["ok", *["timeout"] * FAILURES, *["upstream_down"] * 5]
    errors = gateway.audit("tool = 'stuck__echo' AND kind = 'outcome'")
    assert OPEN.fullmatch(errors[-1]["error"])


async def test_dead_upstream_fails_fast_and_a_trial_finds_it_still_down(failing: Failing):
    gateway, gone = failing.gateway, failing.victims["gone"]
    async with mcp_client(gateway, failing.token) as client:
        assert (await client.call_tool("gone__echo", {"text": "up"})).content[0].text == "up"
        before = await healthy_median(client)
        gone.kill()
        gone.wait(timeout=10)
        messages, during = [], []
        for _ in range(FAILURES + 3):
            seconds, result = await timed(client.call_tool("gone__echo", {"text": "x"}))
            assert isinstance(result, MCPError), result
            assert result.code == UNAVAILABLE, result
            assert seconds < FAST  # found down at once, then refused at once
            messages.append(result.error.message)
            during.append(await healthy_call(client))
        report("gone (SIGKILL)", before, during)
        assert all(OPEN.fullmatch(m) for m in messages[FAILURES:]), messages
        assert not any(OPEN.fullmatch(m) for m in messages[:FAILURES]), messages
        # The reset time passes: one trial goes through, finds it down, and opens it again.
        await asyncio.sleep(RESET + 0.1)
        trial = await timed(client.call_tool("gone__echo", {"text": "trial"}))
        again = await timed(client.call_tool("gone__echo", {"text": "again"}))
    assert isinstance(trial[1], MCPError)
    assert trial[1].code == UNAVAILABLE
    assert trial[0] < FAST
    assert "is down" in trial[1].error.message
    assert refused(again[1], again[0]).group(2) == str(FAILURES + 1)
    print(f"gone: messages {messages[0]!r} … {messages[-1]!r}")
    assert outcomes(gateway, "gone__echo", FAILURES + 6)[1:] == ["upstream_down"] * (FAILURES + 5)


async def test_wedged_stdio_upstream_is_replaced_and_the_trial_closes_the_breaker(
    failing: Failing,
):
    gateway = failing.gateway
    async with (
        mcp_client(gateway, failing.token) as victim,
        mcp_client(gateway, failing.token) as healthy,
    ):
        pid = (await victim.call_tool("wedged__pid", {})).structured_content["result"]
        before = await healthy_median(healthy)
        os.kill(pid, signal.SIGSTOP)
        try:

            async def hang_then_recover() -> tuple[float, Any]:
                opened = await calls_time_out(victim, "wedged__echo", "hung")
                seconds, result = await timed(victim.call_tool("wedged__echo", {"text": "x"}))
                refused(result, seconds)
                return await recovered(victim, "wedged__pid", opened)

            async with asyncio.TaskGroup() as group:
                victim_calls = group.create_task(hang_then_recover())
                during = await healthy_latencies(healthy, victim_calls)
            after, result = victim_calls.result()
        finally:
            with contextlib.suppress(ProcessLookupError):  # the gateway should have killed it
                os.kill(pid, signal.SIGCONT)
        report("wedged (stdio, SIGSTOP)", before, during)
        print(f"wedged: first call through {after:.2f} s after the breaker opened")
    # The gateway dropped the wedged session and started a new server process.
    assert result.structured_content["result"] != pid
    assert after >= RESET - 0.1
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
