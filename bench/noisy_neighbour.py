"""Noisy neighbour: 50 agents make paced calls while one more agent floods the same gateway.

One gateway (``manage.py serve``, SQLite, the default guardrails of a new tenant) and the fast
echo upstream (bench/echo_upstream.py), so the gateway is what is measured. ``--agents``
agents each hold one WebSocket and call ``echo__echo`` ``--rate`` times a second, open loop:
each call is sent at its own time (a random phase per agent, then one period apart), answered
or not. Each call is timed from its send to its answer; any error among them fails the run.

- **baseline**: the paced agents alone.
- **flood**: the same agents, pacing and duration, while one more agent floods over its own
  connection, from a process of its own (its client work must not slow the paced agents'
  event loop). It keeps ``--window`` tools/call unanswered, more than the 64 a connection
  may have (the rest are refused with -32007 and sent again at once). One call in
  ``--invalid-every`` is invalid: it names an unknown tool (-32602, audited) or carries wrong
  types (-32602), in turn. After every ``--bad-every`` calls it sends a small bad frame
  (malformed JSON, too deep to parse, JSON-RPC with wrong types, a batch, a scalar, an
  unknown method, a binary frame: each gets an error frame); ``--oversized`` times a second
  a 2 MiB frame (above MCP_MAX_MESSAGE_BYTES, under WS_MAX_FRAME_BYTES: an error frame);
  every ``--overcap`` seconds a 5 MiB one (above WS_MAX_FRAME_BYTES: the server closes with
  1009), after which it reconnects and goes on.

One gateway process serves both, after one warm-up; the phases alternate ``--rounds`` times
(baseline, then flood, each ``--seconds / --rounds`` long), so that both see the same warm
process, the same database growth and the same load from anything else on the machine. The
paced agents keep their connections throughout; the flood starts 0.5 s before a flood segment
is measured and is answered in full before the next baseline segment starts. The figure is
the paced agents' p99 with the flood ÷ their p99 without, over all rounds.

    .venv/bin/python bench/noisy_neighbour.py [--agents 50 --rate 2 --seconds 15 --rounds 5]

Goal on the reference machine (2 cores): p99 with flood ÷ p99 without <= 2, and no paced call
fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.harness import (
    PROTOCOL,
    RpcError,
    WsClient,
    cpu_seconds,
    fresh_setup,
    median,
    percentile,
    raise_open_files,
    report,
    serve,
)

TOOL = "echo__echo"
TEXT = "the quick brown fox jumps over the lazy dog " * 4  # a small, typical argument
CALL_TIMEOUT = 10.0  # seconds: a paced call slower than this counts as failed
WARM_UP_SECONDS = 3.0
RAMP_SECONDS = 0.5  # the flood runs this long before the paced agents' segment starts
SETTLE_SECONDS = 0.5  # after the flood's last answer, before the next baseline segment
GOAL = 2.0
MIB = 1024 * 1024
OVERSIZED_BYTES = 2 * MIB  # above MCP_MAX_MESSAGE_BYTES (1 MiB), under WS_MAX_FRAME_BYTES
OVERCAP_BYTES = 5 * MIB  # above WS_MAX_FRAME_BYTES (4 MiB): the connection is closed (1009)
FLOOD_TOKEN_ENV = "NOISY_NEIGHBOUR_TOKEN"  # noqa: S105 (a variable name)


# ---------------------------------------------------------------- the paced agents


@dataclass
class Phase:
    samples: list[float] = field(default_factory=list)  # seconds, send to answer
    late: list[float] = field(default_factory=list)  # seconds each send was behind schedule
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    gateway_cpu: float = 0.0  # seconds of the gateway process's CPU during the phase


async def paced_call(client: WsClient, due: float, phase: Phase, text: str) -> None:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    phase.late.append(max(0.0, loop.time() - due))
    try:
        result = await asyncio.wait_for(client.call(TOOL, {"text": text}), CALL_TIMEOUT)
    except RpcError as exc:
        phase.errors[f"error {exc.code}"] += 1
        return
    except TimeoutError:
        phase.errors[f"no answer within {CALL_TIMEOUT:g} s"] += 1
        return
    except ConnectionError:
        phase.errors["connection lost"] += 1
        return
    elapsed = time.perf_counter() - start
    content = result.get("content") or [{}]
    if result.get("isError") or content[0].get("text") != text:
        phase.errors["wrong result"] += 1
        return
    phase.samples.append(elapsed)


async def paced_agent(
    client: WsClient, phase: Phase, rate: float, start: float, end: float, rng: random.Random
) -> None:
    """One agent's calls: a random phase, then one every 1/rate s until ``end``; each is sent
    on time, however long the ones before it take (open loop)."""
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    due = start + rng.uniform(0, period)
    calls: list[asyncio.Task[None]] = []
    while due < end:
        await asyncio.sleep(max(0.0, due - loop.time()))
        text = f"{TEXT}{rng.getrandbits(32):08x}"
        calls.append(asyncio.create_task(paced_call(client, due, phase, text)))
        due += period
    await asyncio.gather(*calls)


async def paced(
    clients: list[WsClient], rate: float, seconds: float, rng: random.Random, gateway_pid: int
) -> Phase:
    phase = Phase()
    loop = asyncio.get_running_loop()
    cpu0, t0 = cpu_seconds(gateway_pid), loop.time()
    start = t0 + 0.05
    agents = [paced_agent(c, phase, rate, start, start + seconds, rng) for c in clients]
    await asyncio.gather(*agents)
    phase.seconds = loop.time() - t0
    phase.gateway_cpu = cpu_seconds(gateway_pid) - cpu0
    return phase


def line(name: str, phase: Phase) -> None:
    ms = [s * 1000 for s in phase.samples] or [float("nan")]
    late = [s * 1000 for s in phase.late] or [0.0]
    print(
        f"{name:<9} {len(phase.samples):5d} calls  p50 {median(ms):7.2f} ms  "
        f"p99 {percentile(ms, 99):7.2f} ms  max {max(ms):7.2f} ms  "
        f"errors {sum(phase.errors.values())}  "
        f"(client send lag p99 {percentile(late, 99):.2f} ms; "
        f"gateway CPU {100 * phase.gateway_cpu / phase.seconds:.0f}%)",
        flush=True,
    )
    for kind, count in phase.errors.most_common():
        print(f"          {count} x {kind}", flush=True)


# ---------------------------------------------------------------- the flooder (own process)


def small_bad_frames() -> list[tuple[str, str | bytes]]:
    """Each kind of small bad input once: (kind, frame). The gateway answers each with an
    error frame and keeps the connection open."""
    return [
        ("malformed", '{"jsonrpc":"2.0","id":"b","method":"tools/call","params":{'),
        ("malformed", "this is not JSON"),
        ("malformed", '{"jsonrpc":"2.0","id":"b","method":"ping","params":{"x":NaN}}'),
        ("malformed", "[" * 5000 + "]" * 5000),
        ("wrong types", '{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{}}'),
        ("wrong types", '{"jsonrpc":"2.0","id":"b","method":"tools/call","params":[1,2]}'),
        ("wrong types", '{"jsonrpc":"2.0","id":"b","method":7}'),
        ("wrong types", '{"jsonrpc":"1.0","id":"b","method":"tools/call"}'),
        ("wrong types", '{"jsonrpc":"2.0","id":true,"method":"tools/list"}'),
        ("wrong types", '[{"jsonrpc":"2.0","id":"b","method":"ping"}]'),
        ("wrong types", "42"),
        ("unknown method", '{"jsonrpc":"2.0","id":"b","method":"tools/destroy"}'),
        ("binary", b'{"jsonrpc":"2.0","id":"b","method":"ping"}'),
    ]


def bad_call(request_id: int) -> tuple[str, str]:
    """A tools/call with wrong types inside its params: it takes an in-flight slot, then gets
    -32602 (or -32007 when the 64 slots are taken)."""
    kind = request_id % 3
    if kind == 0:
        params = {"name": 7}
    elif kind == 1:
        params = {"name": TOOL, "arguments": "text"}
    else:
        params = {"name": "x" * 400, "arguments": {}}
    return "invalid params", json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    )


def big_frame(size: int) -> str:
    head = '{"jsonrpc":"2.0","id":"big","method":"tools/call","params":{"name":"echo__echo",'
    head += '"arguments":{"text":"'
    tail = '"}}}'
    return head + "x" * (size - len(head) - len(tail)) + tail


@dataclass
class FloodStats:
    sent: Counter[str] = field(default_factory=Counter)  # frames by kind
    answers: Counter[str] = field(default_factory=Counter)  # "ok" or the error code
    closes: Counter[str] = field(default_factory=Counter)
    connections: int = 0


class Flood:
    """The flooding agent's state: ``going`` is set while it floods; each connection stops
    when it is cleared (once its calls are answered) or the server closes it."""

    def __init__(self, url: str, token: str, args: argparse.Namespace) -> None:
        self.url, self.token, self.args = url, token, args
        self.stats = FloodStats()
        self.going = asyncio.Event()
        self.idle = asyncio.Event()  # set while not flooding (paused, calls answered)
        self.idle.set()
        self.bad = itertools.cycle(small_bad_frames())
        self.oversized, self.overcap = big_frame(OVERSIZED_BYTES), big_frame(OVERCAP_BYTES)

    def call_frame(self, rid: int) -> tuple[str, str]:
        """The flood's call ``rid``: one in ``--invalid-every`` is invalid, to a tool nobody
        has and with wrong types in turn."""
        every = self.args.invalid_every
        if every > 0 and rid % every == 0:
            if rid // every % 2:
                return bad_call(rid)
            params = {"name": "nothing__here", "arguments": {"text": "x"}}
            message = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": params}
            return "unknown tool", json.dumps(message)
        return "call", (
            f'{{"jsonrpc":"2.0","id":{rid},"method":"tools/call","params":'
            f'{{"name":"{TOOL}","arguments":{{"text":"flood {rid}"}}}}}}'
        )

    async def connection(self) -> None:
        """One connection, flooding while ``going`` is set; returns once paused with every
        call answered, or when the server closed it (the caller reconnects)."""
        loop, args, stats = asyncio.get_running_loop(), self.args, self.stats
        async with connect(
            self.url,
            subprotocols=[Subprotocol("mcp")],
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=None,
            compression=None,
            open_timeout=10,
            close_timeout=2,
        ) as ws:
            init = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": PROTOCOL,
                    "capabilities": {},
                    "clientInfo": {"name": "flooder", "version": "1"},
                },
            }
            await ws.send(json.dumps(init))
            async with asyncio.timeout(10):
                while json.loads(await ws.recv()).get("id") != 0:
                    pass
            await ws.send('{"jsonrpc":"2.0","method":"notifications/initialized"}')
            stats.connections += 1
            slots = asyncio.Semaphore(args.window)
            pending: set[int] = set()

            async def read() -> None:
                with contextlib.suppress(ConnectionClosed):
                    async for frame in ws:
                        message = json.loads(frame)
                        error = message.get("error")
                        stats.answers[f"error {error.get('code')}" if error else "ok"] += 1
                        rid = message.get("id")
                        if rid in pending:
                            pending.discard(rid)
                            slots.release()
                stats.closes[f"closed {ws.close_code}"] += 1

            reader = asyncio.create_task(read())
            ids = itertools.count(1)
            now = loop.time()
            next_big = now + 1 / args.oversized if args.oversized > 0 else float("inf")
            overcap_at = now + args.overcap if args.overcap > 0 else float("inf")
            try:
                while self.going.is_set() and not reader.done():
                    try:
                        async with asyncio.timeout(0.2):
                            await slots.acquire()
                    except TimeoutError:
                        continue
                    rid = next(ids)
                    pending.add(rid)
                    kind, frame = self.call_frame(rid)
                    await ws.send(frame)
                    stats.sent[kind] += 1
                    if args.bad_every > 0 and rid % args.bad_every == 0:
                        kind, bad = next(self.bad)
                        await ws.send(bad)
                        stats.sent[kind] += 1
                    now = loop.time()
                    if now >= next_big:
                        await ws.send(self.oversized)
                        stats.sent["oversized 2 MiB"] += 1
                        next_big = max(next_big + 1 / args.oversized, now)
                    if now >= overcap_at:
                        await ws.send(self.overcap)
                        stats.sent["over the frame cap 5 MiB"] += 1
                        break  # the server closes the connection
                async with asyncio.timeout(10):  # paused: the answers still due, or the close
                    while pending and not reader.done():
                        await asyncio.sleep(0.01)
                    if not self.going.is_set() and not reader.done():
                        return
                    await asyncio.shield(reader)
            except (ConnectionClosed, TimeoutError):
                pass
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader

    async def run(self) -> None:
        """Flood while ``going`` is set, reconnecting whenever the server closes."""
        while True:
            self.idle.set()
            await self.going.wait()
            self.idle.clear()
            while self.going.is_set():
                try:
                    await self.connection()
                except (OSError, ConnectionClosed, TimeoutError) as exc:
                    self.stats.closes[f"connect failed: {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.1)


async def flooder(args: argparse.Namespace) -> None:
    """The flooding agent's process, told what to do on stdin, a line each: ``go`` (answered
    ``flooding`` once it floods), ``pause`` (answered ``paused`` once its calls are answered),
    ``stats`` (answered with its counts so far as JSON). It exits on EOF or after ``--seconds``.
    """
    flood = Flood(args.url, os.environ[FLOOD_TOKEN_ENV], args)
    running = asyncio.create_task(flood.run())
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(args.seconds):
            while command := (await reader.readline()).strip():
                if command == b"go":
                    connections = flood.stats.connections
                    flood.going.set()
                    while flood.stats.connections == connections and not running.done():
                        await asyncio.sleep(0.01)
                    print("flooding", flush=True)
                elif command == b"pause":
                    flood.going.clear()
                    await flood.idle.wait()
                    print("paused", flush=True)
                elif command == b"stats":
                    stats = flood.stats
                    counts = {"sent": stats.sent, "answers": stats.answers, "closes": stats.closes}
                    print(json.dumps({**counts, "connections": stats.connections}), flush=True)
    running.cancel()


# ---------------------------------------------------------------- the run


class Flooder:
    """The flooding agent's process, driven over its stdin."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, url: str, token: str, args: argparse.Namespace):  # type: ignore[no-untyped-def]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--flooder",
            url,
            "--seconds",
            str(2 * args.seconds + 60),  # a bound in case nobody stops it
            "--window",
            str(args.window),
            "--invalid-every",
            str(args.invalid_every),
            "--bad-every",
            str(args.bad_every),
            "--oversized",
            str(args.oversized),
            "--overcap",
            str(args.overcap),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, FLOOD_TOKEN_ENV: token},
        )
        try:
            yield cls(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    async def tell(self, command: str, answer: str) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(20):
            said = await self.process.stdout.readline()
        if said.strip() != answer.encode():
            raise RuntimeError(f"the flooder said {said!r} to {command!r}")

    async def stats(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(b"stats\n")
        await self.process.stdin.drain()
        async with asyncio.timeout(20):
            return json.loads(await self.process.stdout.readline())

    async def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        async with asyncio.timeout(20):
            await self.process.wait()


@contextlib.contextmanager
def profiled(pid: int, path: str | None, seconds: float) -> Iterator[None]:
    """py-spy on the gateway for ``seconds`` (raw collapsed stacks in ``path``), if asked."""
    if not path:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    command = [str(spy), "record", "-p", str(pid), "-d", str(max(1, round(seconds)))]
    command += ["--format", "raw", "-o", path, "--nonblocking", "--threads", "-r", "200"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
        process.wait(timeout=seconds + 10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def pooled(phases: list[Phase]) -> Phase:
    out = Phase()
    for phase in phases:
        out.samples += phase.samples
        out.late += phase.late
        out.errors.update(phase.errors)
        out.seconds += phase.seconds
        out.gateway_cpu += phase.gateway_cpu
    return out


@dataclass
class FloodShare:
    """What the flooder did while the paced agents measured: counts summed over segments."""

    sent: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    cpu: float = 0.0

    def add(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        self.sent += Counter(after["sent"]) - Counter(before["sent"])
        self.answers += Counter(after["answers"]) - Counter(before["answers"])


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    segment = args.seconds / args.rounds
    bases: list[Phase] = []
    floods: list[Phase] = []
    share = FloodShare()
    with fresh_setup(agents=args.agents + 1) as setup, serve(setup) as gateway:
        tokens, flood_token = setup.tokens[: args.agents], setup.tokens[args.agents]
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(WsClient.connected(gateway.ws_url, token))
                for token in tokens
            ]
            flooder = await stack.enter_async_context(
                Flooder.started(gateway.ws_url, flood_token, args)
            )
            await paced(clients, args.rate * 2, WARM_UP_SECONDS, rng, gateway.pid)
            await asyncio.sleep(SETTLE_SECONDS)  # as before every later baseline segment
            for round_ in range(args.rounds):
                bases.append(await paced(clients, args.rate, segment, rng, gateway.pid))
                await flooder.tell("go", "flooding")
                await asyncio.sleep(RAMP_SECONDS)
                before, cpu0 = await flooder.stats(), cpu_seconds(flooder.process.pid)
                with profiled(gateway.pid, args.profile if round_ == 0 else None, segment):
                    floods.append(await paced(clients, args.rate, segment, rng, gateway.pid))
                share.cpu += cpu_seconds(flooder.process.pid) - cpu0
                share.add(before, await flooder.stats())
                share.seconds += floods[-1].seconds
                await flooder.tell("pause", "paused")
                await asyncio.sleep(SETTLE_SECONDS)
            totals = await flooder.stats()
            await flooder.stop()
    base, flood = pooled(bases), pooled(floods)
    line("baseline", base)
    line("flood", flood)
    rounds = [
        f"{percentile(b.samples, 99) * 1000:.0f}/{percentile(f.samples, 99) * 1000:.0f}"
        for b, f in zip(bases, floods, strict=True)
        if b.samples and f.samples
    ]
    print(f"p99 ms by round (baseline/flood): {', '.join(rounds)}")
    base_ms = [s * 1000 for s in base.samples] or [float("nan")]
    flood_ms = [s * 1000 for s in flood.samples] or [float("nan")]
    base_p50, base_p99 = median(base_ms), percentile(base_ms, 99)
    flood_p50, flood_p99 = median(flood_ms), percentile(flood_ms, 99)
    seconds, sent, answers = share.seconds, share.sent, share.answers
    ok_rate = answers["ok"] / seconds
    calls = sent["call"] + sent["unknown tool"] + sent["invalid params"]
    bad_kinds = [kind for kind in sent if kind != "call"]
    bad = sum(sent[kind] for kind in bad_kinds)
    print(
        f"flooder while measured ({seconds:.1f} s): {ok_rate:.0f} calls/s answered ok, "
        f"{calls / seconds:.0f} tools/call sent/s, "
        f"{answers['error -32007'] / seconds:.0f}/s refused at the in-flight cap; "
        f"{bad} bad frames ({bad / seconds:.0f}/s: "
        f"{', '.join(f'{sent[kind]} {kind}' for kind in bad_kinds)}); "
        f"flooder CPU {100 * share.cpu / seconds:.0f}%",
        flush=True,
    )
    print(
        f"flooder answers: {dict(answers.most_common())}; over the run: "
        f"{totals['connections']} connections, closes {totals['closes']}",
        flush=True,
    )
    errors = sum(base.errors.values()) + sum(flood.errors.values())
    ratio = flood_p99 / base_p99
    met = ratio <= GOAL and errors == 0 and totals["connections"] > 0
    if errors:
        print(f"FAILED: {errors} paced call(s) failed (see above)", flush=True)
    report(
        "noisy_neighbour",
        ratio=ratio,
        goal=f"paced p99 with flood ÷ without ≤ {GOAL:g}, no paced errors",
        met=met,
        figures=(
            f"paced p99 {flood_p99:.2f} ms with flood vs {base_p99:.2f} ms without "
            f"(p50 {flood_p50:.2f} vs {base_p50:.2f}); {args.agents} agents at "
            f"{args.rate:g} calls/s, {len(flood.samples)}+{len(base.samples)} calls, "
            f"{errors} paced errors; flooder {ok_rate:.0f} ok calls/s, {bad} bad frames"
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--agents", type=int, default=50, help="paced agents")
    parser.add_argument("--rate", type=float, default=2.0, help="calls/s of each paced agent")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--window", type=int, default=80, help="flood calls kept unanswered")
    parser.add_argument(
        "--invalid-every", type=int, default=4, help="one flood call in N is invalid (0: none)"
    )
    parser.add_argument("--bad-every", type=int, default=4, help="a small bad frame per N calls")
    parser.add_argument("--oversized", type=float, default=10.0, help="2 MiB frames a second")
    parser.add_argument("--overcap", type=float, default=2.0, help="seconds between 5 MiB frames")
    parser.add_argument("--rounds", type=int, default=5, help="baseline/flood alternations")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the first flood segment")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--flooder", metavar="URL", dest="url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.url:
        asyncio.run(flooder(args))
        return
    raise_open_files()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
