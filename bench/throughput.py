"""Governed tool calls per second through one gateway process ÷ calls per second straight to
the same upstream, with the same client and the same number of calls in flight.

The upstream is a real MCP server over stdio: the SDK's ``MCPServer`` (tests/e2e/testkit_server.py,
tool ``echo``), as a deployment would run one. The client is the lean JSON-RPC client of
bench/harness.py, keeping ``--in-flight`` calls outstanding at all times:

- **direct**, the baseline: over stdio to a testkit server spawned by the client;
- **governed**: over WebSocket to a gateway (``manage.py serve``, SQLite, the default guardrails
  of a new tenant, the testkit server as upstream ``echo``), spread over ``--agents`` agents
  (a connection runs two calls at a time, so 16 agents for 32 in flight);
  every call gets a policy decision, the guardrails, a durable intent before the upstream is
  called and a durable outcome before its answer is released (the group-commit writer).

Each phase runs ``--calls`` calls after a warm-up, or stops after ``--seconds``. Then the same
gateway measurement with the fast echo upstream (bench/echo_upstream.py), which shows the
gateway's own ceiling; its ratio to the fast upstream alone is printed for the record.

    .venv/bin/python bench/throughput.py [--calls 3000] [--in-flight 32] [--agents 16]

Goal on the reference machine (2 cores): governed ÷ direct >= 0.8 with the stdio MCP server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    ECHO_UPSTREAM,
    TESTKIT_UPSTREAM,
    StdioClient,
    WsClient,
    _Client,
    fresh_setup,
    report,
    serve,
)

TEXT = "the quick brown fox jumps over the lazy dog " * 4


async def saturate(clients: list[_Client], tool: str, calls: int, in_flight: int, seconds: float):
    """Calls per second with ``in_flight`` calls outstanding, spread over ``clients``."""
    remaining = calls
    deadline = time.perf_counter() + seconds

    async def worker(client: _Client) -> int:
        nonlocal remaining
        done = 0
        while remaining > 0 and time.perf_counter() < deadline:
            remaining -= 1
            await client.call(tool, {"text": TEXT})
            done += 1
        return done

    for _ in range(2):  # warm up: fill every session and cache, then measure
        await asyncio.gather(*(c.call(tool, {"text": "warm"}) for c in clients for _ in range(8)))
    start = time.perf_counter()
    done = await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(in_flight)))
    return sum(done) / (time.perf_counter() - start)


async def governed(upstream: list[str], agents: int, options: argparse.Namespace) -> float:
    with fresh_setup(agents=agents, upstream=upstream) as setup, serve(setup) as gateway:
        connections = [WsClient.connected(gateway.ws_url, t) for t in setup.tokens]
        clients = [await c.__aenter__() for c in connections]
        try:
            return await saturate(
                clients, "echo__echo", options.calls, options.in_flight, options.seconds
            )
        finally:
            for c in connections:
                await c.__aexit__(None, None, None)


async def direct(upstream: list[str], options: argparse.Namespace) -> float:
    async with StdioClient.spawned(upstream) as client:
        return await saturate([client], "echo", options.calls, options.in_flight, options.seconds)


async def main(options: argparse.Namespace) -> None:
    print(f"{options.in_flight} calls in flight; governed calls over {options.agents} agents")
    direct_rate = await direct(TESTKIT_UPSTREAM, options)
    print(f"direct   (SDK server, stdio)   {direct_rate:8.0f} calls/s")
    governed_rate = await governed(TESTKIT_UPSTREAM, options.agents, options)
    print(f"governed (SDK server, stdio)   {governed_rate:8.0f} calls/s")
    fast_direct = await direct(ECHO_UPSTREAM, options)
    print(f"direct   (fast echo, stdio)    {fast_direct:8.0f} calls/s")
    fast_governed = await governed(ECHO_UPSTREAM, options.agents, options)
    print(
        f"governed (fast echo, stdio)    {fast_governed:8.0f} calls/s"
        f"   (the gateway's own ceiling: {fast_governed / fast_direct:.2f} of the fast echo)"
    )
    ratio = governed_rate / direct_rate
    report(
        "throughput",
        ratio=ratio,
        goal="≥ 0.8",
        met=ratio >= 0.8,
        figures=(
            f"governed {governed_rate:.0f} ÷ direct {direct_rate:.0f} calls/s (SDK MCP server over "
            f"stdio, {options.in_flight} in flight); gateway ceiling {fast_governed:.0f} calls/s"
        ),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0, help="cap on each phase")
    asyncio.run(main(parser.parse_args()))
