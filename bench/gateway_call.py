"""Governed tool call vs the same call straight to the upstream, same client, one run.

    .venv/bin/python bench/gateway_call.py [--calls 500]

Starts a real gateway (`manage.py serve`) on a temporary SQLite database with a stdio echo
upstream (tests/e2e/testkit_server.py), then times sequential `tools/call`s with the mcp SDK
client: directly over stdio to the upstream, and through the gateway over WebSocket and
streamable HTTP (policy decision + durable intent and outcome records on each call). Prints
p50/p99 and the throughput ratio gateway ÷ direct last.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from examples.mcp_ws import websocket_client  # noqa: E402

UPSTREAM = [sys.executable, str(ROOT / "tests" / "e2e" / "testkit_server.py")]


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


async def timed_calls(client: Client, tool: str, calls: int) -> list[float]:
    for _ in range(20):  # warm up
        await client.call_tool(tool, {"text": "warm"})
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        await client.call_tool(tool, {"text": f"call {i}"})
        samples.append(time.perf_counter() - start)
    return samples


def summary(name: str, samples: list[float]) -> float:
    ms = sorted(s * 1000 for s in samples)
    p50, p99 = statistics.median(ms), ms[int(len(ms) * 0.99) - 1]
    rate = len(ms) / (sum(ms) / 1000)
    print(f"{name:<28} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   {rate:8.0f} calls/s")
    return rate


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "DATA_DIR": data, "LOG_LEVEL": "WARNING"}
        manage(env, "migrate", "-v0")
        manage(env, "tenant_create", "bench")
        token = manage(env, "agent_create", "--tenant", "bench", "bot").strip().splitlines()[-1]
        manage(env, "toolserver_add", "--tenant", "bench", "echo", "--command", " ".join(UPSTREAM))
        manage(env, "rule_add", "--tenant", "bench", "--agent", "bot", "--tool", "echo__*")
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "serve", "--port", "0"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            base = re.search(r"(http://\S+)", server.stdout.readline()).group(1)
            headers = {"Authorization": f"Bearer {token}"}
            params = StdioServerParameters(command=UPSTREAM[0], args=UPSTREAM[1:])
            async with Client(params, cache=None) as direct:
                direct_rate = summary("direct (stdio)", await timed_calls(direct, "echo", calls))
            ws_url = base.replace("http", "ws", 1) + "/mcp/ws"
            async with Client(websocket_client(ws_url, headers), cache=None) as ws:
                ws_rate = summary("gateway (WebSocket)", await timed_calls(ws, "echo__echo", calls))
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(base + "/mcp", http_client=http), cache=None) as c,
            ):
                http_rate = summary(
                    "gateway (streamable HTTP)", await timed_calls(c, "echo__echo", calls)
                )
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"throughput ratio gateway/direct: WebSocket {ws_rate / direct_rate:.2f}, "
        f"HTTP {http_rate / direct_rate:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    asyncio.run(main(parser.parse_args().calls))
