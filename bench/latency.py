"""Latency the gateway adds to one tool call at low load: one client, one call at a time.

The upstream is the fast echo MCP server (bench/echo_upstream.py), so what is measured is the
gateway, not the upstream. The same lean JSON-RPC client (bench/harness.py) makes ``--calls``
sequential ``tools/call``s, after a warm-up:

- **direct**, the baseline: to the echo server over stdio, spawned by the client;
- **governed**: to ``echo__echo`` through a gateway (``manage.py serve``, SQLite, the default
  guardrails of a new tenant) over WebSocket. Each call gets a policy decision, the input and
  output guardrails, and a durable audit intent before the upstream is called and a durable
  outcome before the answer is released.

Added latency = governed - direct, at p50 and at p99. The ratio printed last is the governed
p50 ÷ the direct p50.

    .venv/bin/python bench/latency.py [--calls 3000]

Goal on the reference machine (2 cores): added p50 <= 1 ms, added p99 <= 5 ms.
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
    StdioClient,
    WsClient,
    fresh_setup,
    median,
    percentile,
    report,
    serve,
)

WARM_UP = 300
TEXT = "the quick brown fox jumps over the lazy dog " * 4  # a small, typical argument


async def sequential(client: StdioClient | WsClient, tool: str, calls: int) -> list[float]:
    for _ in range(WARM_UP):
        await client.call(tool, {"text": TEXT})
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await client.call(tool, {"text": TEXT})
        samples.append(time.perf_counter() - start)
    return samples


def line(name: str, samples: list[float]) -> tuple[float, float]:
    p50, p99 = median(samples) * 1000, percentile(samples, 99) * 1000
    print(f"{name:<24} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   ({len(samples)} calls)")
    return p50, p99


async def main(calls: int) -> None:
    async with StdioClient.spawned(ECHO_UPSTREAM) as direct:
        direct_p50, direct_p99 = line("direct (stdio)", await sequential(direct, "echo", calls))
    with fresh_setup() as setup, serve(setup) as gateway:
        async with WsClient.connected(gateway.ws_url, setup.token) as ws:
            samples = await sequential(ws, "echo__echo", calls)
        gov_p50, gov_p99 = line("governed (WebSocket)", samples)
    added_p50, added_p99 = gov_p50 - direct_p50, gov_p99 - direct_p99
    print(f"added                    p50 {added_p50:7.3f} ms   p99 {added_p99:7.3f} ms")
    report(
        "latency",
        ratio=gov_p50 / direct_p50,
        goal="added p50 ≤ 1 ms and p99 ≤ 5 ms",
        met=added_p50 <= 1 and added_p99 <= 5,
        figures=(
            f"added p50 {added_p50:.3f} ms, p99 {added_p99:.3f} ms "
            f"(governed {gov_p50:.3f}/{gov_p99:.3f}, direct {direct_p50:.3f}/{direct_p99:.3f})"
        ),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    asyncio.run(main(parser.parse_args().calls))
