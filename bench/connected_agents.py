"""Gateway memory per idle connected agent: RSS growth of one gateway process per WebSocket.

Starts a real gateway (``manage.py serve``) on a fresh database whose tenant has one agent,
with its own token, per connection, then connects ``--agents`` agents over ``/mcp/ws``, at
most ``--concurrency`` handshakes at a time. Each completes MCP ``initialize`` and sends
``notifications/initialized``, so it is a real agent, then sits idle. The figure is the
gateway's RSS with every agent connected, after a 2 s settle, less its RSS before the first
one connected (read after a warm-up: 200 agents that connected, pinged and left), divided by
the number of agents. At the end every agent sends a JSON-RPC ``ping``, and all must be
answered. The baseline, in the same run, is the same number of idle WebSocket connections,
sending the same frames, to a bare Channels echo consumer served by the same server (Daphne,
bench/bare_echo.py). Both servers are measured side by side, each with a client process of
its own: the figures are per process and do not touch each other. Prints gateway KB ÷ bare KB
per connection last.

    .venv/bin/python bench/connected_agents.py [--agents 10000] [--concurrency 200]

Goal (issue 8): <= 40 KB of gateway RSS per connected agent, and all still answer a ping.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    PROTOCOL,
    PYTHON,
    ROOT,
    Setup,
    cpu_seconds,
    fresh_setup,
    raise_open_files,
    report,
    rss_bytes,
    serve,
)

GOAL_KB = 40.0
WARMUP = 200  # agents that connect, ping and leave before the "before" RSS is read
SETTLE_SECONDS = 2.0
CONNECT_SECONDS = 120.0  # all agents of one server must be connected within this
STEP_SECONDS = 30.0  # one handshake, one answer
PING_SECONDS = 60.0  # every agent's ping answered within this
RELEASE_BATCH = 1000  # connections dropped at once
QUIET_SECONDS = 8.0  # the server has handled a batch's disconnects within this
# A client process's worst case, each step at its bound: the parent's backstop.
CLIENT_SECONDS = 2 * CONNECT_SECONDS + PING_SECONDS + 2 * SETTLE_SECONDS + 120
BARE_ECHO = [PYTHON, str(ROOT / "bench" / "bare_echo.py"), "--port", "0"]

INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"},
        },
    },
    separators=(",", ":"),
)
INITIALIZED = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
PING_ID = 2
PING = json.dumps({"jsonrpc": "2.0", "id": PING_ID, "method": "ping"}, separators=(",", ":"))


async def answer(ws: ClientConnection, request_id: int) -> dict[str, Any]:
    """The next frame carrying ``request_id`` (the gateway's response, or the echo of the
    request); other frames are skipped, at most a few."""
    for _ in range(8):
        message = json.loads(await asyncio.wait_for(ws.recv(), STEP_SECONDS))
        if message.get("id") == request_id:
            return message
    raise RuntimeError(f"no answer to request {request_id}")


async def open_agent(url: str, token: str, *, echo: bool) -> ClientConnection:
    """Connect and complete the MCP handshake. The echo server sends each frame back, so its
    ``initialized`` echo is read too: the same frames cross the same server either way."""
    ws = await connect(
        url,
        subprotocols=[Subprotocol("mcp")],
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        ping_interval=None,  # idle: no keepalive task per connection on the client
        open_timeout=STEP_SECONDS,
        max_size=2**20,
    )
    try:
        await ws.send(INITIALIZE)
        reply = await answer(ws, 1)
        if not echo and "result" not in reply:
            raise RuntimeError(f"initialize failed: {reply}")
        await ws.send(INITIALIZED)
        if echo:
            await asyncio.wait_for(ws.recv(), STEP_SECONDS)
    except BaseException:
        await ws.close()
        raise
    return ws


async def connect_all(
    url: str, tokens: Sequence[str], *, echo: bool, concurrency: int
) -> list[ClientConnection]:
    """Every token's agent connected and initialized, at most ``concurrency`` handshakes at a
    time, all within CONNECT_SECONDS; on any failure the opened ones are dropped."""
    gate = asyncio.Semaphore(concurrency)
    opened: list[ClientConnection] = []

    async def one(token: str) -> None:
        async with gate:
            ws = await open_agent(url, token, echo=echo)
            opened.append(ws)

    try:
        async with asyncio.timeout(CONNECT_SECONDS):
            async with asyncio.TaskGroup() as group:
                for token in tokens:
                    group.create_task(one(token))
    except TimeoutError:
        drop_all(opened)
        raise RuntimeError(
            f"only {len(opened)}/{len(tokens)} agents connected within {CONNECT_SECONDS:g} s"
        ) from None
    except ExceptionGroup as failed:
        drop_all(opened)
        raise RuntimeError(
            f"{len(opened)}/{len(tokens)} agents connected; one failed: {failed.exceptions[0]!r}"
        ) from failed
    except BaseException:
        drop_all(opened)
        raise
    return opened


async def ping_all(connections: Sequence[ClientConnection], *, concurrency: int) -> int:
    """How many of the connections answered a ``ping`` (the echo: sent it back)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(ws: ClientConnection) -> bool:
        async with gate:
            try:
                await ws.send(PING)
                reply = await answer(ws, PING_ID)
            except Exception:
                return False
            return "result" in reply or reply.get("method") == "ping"

    async with asyncio.timeout(PING_SECONDS):
        answered = await asyncio.gather(*(one(ws) for ws in connections))
    return sum(answered)


def drop_all(connections: Sequence[ClientConnection]) -> None:
    """Drop every connection at once (no closing handshake): the server sees each end."""
    for ws in connections:
        ws.transport.abort()


async def quiet(pid: int) -> None:
    """Wait (at most QUIET_SECONDS) until the server uses under a fifth of a core."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(QUIET_SECONDS):
            while True:
                cpu = cpu_seconds(pid)
                await asyncio.sleep(0.25)
                if cpu_seconds(pid) - cpu < 0.05:
                    return


async def release(pid: int, connections: Sequence[ClientConnection]) -> float:
    """Drop the connections a batch at a time, each once the server has handled the last,
    and return the seconds it took. All at once, the server could take longer than 10 s over
    the disconnects (a Channels consumer hands each to the one sync thread, to close stale
    database connections), and Daphne kills consumers not gone 10 s after their connection
    ended, with a warning each: thousands of lines on stderr."""
    start = time.perf_counter()
    for first in range(0, len(connections), RELEASE_BATCH):
        drop_all(connections[first : first + RELEASE_BATCH])
        await quiet(pid)
    return time.perf_counter() - start


async def measure(
    name: str, pid: int, url: str, tokens: Sequence[str], *, echo: bool, concurrency: int
) -> tuple[float, int]:
    """(RSS growth per connection in KB, pings answered) for one server."""
    warm, agents = tokens[:WARMUP], tokens[WARMUP:]
    warmed = await connect_all(url, warm, echo=echo, concurrency=concurrency)
    await ping_all(warmed, concurrency=concurrency)
    await release(pid, warmed)
    await asyncio.sleep(SETTLE_SECONDS)
    before, cpu, own = rss_bytes(pid), cpu_seconds(pid), time.process_time()

    start = time.perf_counter()
    connections = await connect_all(url, agents, echo=echo, concurrency=concurrency)
    took = time.perf_counter() - start
    print(
        f"{name}: {len(connections)} agents connected and initialized in {took:.1f} s "
        f"({len(connections) / took:.0f}/s; server CPU "
        f"{(cpu_seconds(pid) - cpu) / len(connections) * 1000:.2f} ms each, client "
        f"{(time.process_time() - own) / len(connections) * 1000:.2f} ms)",
        flush=True,
    )
    try:
        await asyncio.sleep(SETTLE_SECONDS)
        after = rss_bytes(pid)
        per_kb = (after - before) / len(connections) / 1024
        print(
            f"{name}: RSS {before / 2**20:.1f} MiB before, {after / 2**20:.1f} MiB with "
            f"{len(connections)} connected: {per_kb:.1f} KB per connection",
            flush=True,
        )
        start = time.perf_counter()
        answered = await ping_all(connections, concurrency=concurrency)
        print(
            f"{name}: {answered}/{len(connections)} answered a ping "
            f"in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
    finally:
        took = await release(pid, connections)
        print(f"{name}: connections dropped and let go of in {took:.1f} s", flush=True)
    return per_kb, answered


def client(
    results: Connection, name: str, pid: int, url: str, tokens: Sequence[str], **options: Any
) -> None:
    """One client process: measure one server, send back its figures (or the error)."""
    try:
        results.send(asyncio.run(measure(name, pid, url, tokens, **options)))
    except BaseException as exc:
        results.send(RuntimeError(f"{name}: {exc!r}"))
        raise


def measure_both(setup: Setup, *, concurrency: int) -> tuple[tuple[float, int], ...]:
    """The bare echo and the gateway, side by side: each server is one process on its own
    core, each with a client process of its own; the figures of one do not touch the other."""
    context = multiprocessing.get_context("fork")
    with serve(setup, argv=BARE_ECHO) as bare, serve(setup) as gateway:
        targets = [
            ("bare echo", bare.pid, bare.base.replace("http", "ws", 1) + "/ws", True),
            ("gateway", gateway.pid, gateway.ws_url, False),
        ]
        workers, pipes = [], []
        for name, pid, url, echo in targets:
            receiving, sending = context.Pipe(duplex=False)
            worker = context.Process(
                target=client,
                args=(sending, name, pid, url, setup.tokens),
                kwargs={"echo": echo, "concurrency": concurrency},
            )
            worker.start()
            sending.close()  # the child's end: if the child dies, recv() raises EOFError
            workers.append(worker)
            pipes.append(receiving)
        try:
            deadline = time.monotonic() + CLIENT_SECONDS
            results = []
            for (name, *_), receiving in zip(targets, pipes, strict=True):
                if not receiving.poll(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"{name}: the client did not finish in {CLIENT_SECONDS} s")
                try:
                    result = receiving.recv()
                except EOFError:
                    raise RuntimeError(f"{name}: the client process died") from None
                if isinstance(result, BaseException):
                    raise result
                results.append(result)
            return tuple(results)
        finally:
            for worker in workers:
                worker.join(10)
                if worker.is_alive():
                    worker.kill()
                    worker.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10000, help="idle agents to connect")
    parser.add_argument(
        "--concurrency", type=int, default=200, help="handshakes under way at once, per server"
    )
    args = parser.parse_args()
    limit = raise_open_files()
    print(f"open files limit: {limit}", flush=True)

    start = time.perf_counter()
    with fresh_setup(agents=args.agents + WARMUP) as setup:
        print(
            f"setup: tenant with {len(setup.tokens)} agents in {time.perf_counter() - start:.1f} s",
            flush=True,
        )
        (bare_kb, bare_pings), (gateway_kb, pings) = measure_both(
            setup, concurrency=args.concurrency
        )
    print(f"run took {time.perf_counter() - start:.0f} s", flush=True)

    met = gateway_kb <= GOAL_KB and pings == args.agents
    report(
        "connected_agents",
        ratio=gateway_kb / bare_kb,
        goal=f"<= {GOAL_KB:.0f} KB per connection, all answer a ping",
        met=met,
        figures=(
            f"gateway {gateway_kb:.1f} KB/connection, {pings}/{args.agents} pings answered; "
            f"bare echo {bare_kb:.1f} KB/connection, {bare_pings}/{args.agents}; "
            f"{args.agents} idle agents"
        ),
    )


if __name__ == "__main__":
    main()
