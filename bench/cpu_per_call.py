"""CPU per governed call ÷ CPU per message of a bare Channels echo consumer on the same server.

What is measured is the CPU time (user + system, all threads, from /proc/PID/stat) that the
gateway process (``manage.py serve``: Daphne, SQLite, the default guardrails of a new tenant)
spends on ``--calls`` governed ``tools/call``s of ``echo__echo``: the policy decision, the
input and output guardrails, a durable intent and outcome record, the call to the echo
upstream (bench/echo_upstream.py) over stdio. ``--clients`` WebSocket connections, one agent
each, make the calls, each one after the other (``--clients`` calls in flight), after a
warm-up. Only the gateway process is counted: the upstream is a process of its own, its CPU
is printed apart. Each server's idle CPU (the gateway's governance poll every 0.25 s, its
heartbeat and upstream watch) is taken over ``--idle`` seconds after the warm-up, and that
rate times the measured wall time is subtracted.

The baseline is a bare Channels echo consumer (bench/bare_echo.py) on the same server
(Daphne, with the gateway's own patches): the same client, connections and concurrency;
``--messages`` JSON-RPC frames the size of the governed call's answer, each sent and echoed.
The stock consumer's ``dispatch`` hops to a thread per message to close stale database
connections, about half of its cost; the gateway's consumer skips that hop, so the baseline
the ratio printed last uses skips it too (``bare_echo.py --lean``): CPU per governed call ÷
CPU per echoed message. The ratio to the stock echo is printed as well.

The same is measured with uvicorn as the ASGI server, for the bare echo and for the gateway
(``orchestrator.asgi:application``; the gateway starts on the first connection) and printed
before the result, which stays about what ships, Daphne (``--no-uvicorn`` skips it). All the
servers run at once and take turns for ``--rounds`` rounds, so that a change of load from
elsewhere on the machine falls on each alike; each line gives the spread over the rounds.
``--profile FILE`` then records the Daphne gateway under the same load with py-spy (raw
stacks into FILE) and prints where its CPU per call goes (see "profile" below for how).

    .venv/bin/python bench/cpu_per_call.py [--calls 2000] [--messages 8000] [--clients 8]
                                           [--no-uvicorn] [--profile FILE]

Goal (issue 8): CPU per governed call ÷ CPU per bare echo message ≤ 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness import (
    PYTHON,
    ROOT,
    WsClient,
    cpu_seconds,
    fresh_setup,
    parent_pids,
    report,
    serve,
)

TOOL = "echo__echo"
TEXT = "the quick brown fox jumps over the lazy dog " * 4  # a small, typical argument
ANSWER = {"content": [{"type": "text", "text": TEXT}], "isError": False}
WARM_UP = 40  # calls per client before anything is measured
PY_SPY = Path(PYTHON).with_name("py-spy")

# The gateway's ASGI application on uvicorn, on a socket bound before it starts (so the
# harness reads the port from the first line), with the same frame limit as Daphne.
UVICORN_GATEWAY = """
import socket
import uvicorn
from orchestrator.asgi import application
from django.conf import settings
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(2048)
print(f"gateway (uvicorn) listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
config = uvicorn.Config(
    application, log_level="warning", ws_max_size=settings.WS_MAX_FRAME_BYTES, lifespan="off"
)
uvicorn.Server(config).run(sockets=[sock])
"""


class Client(WsClient):
    """The harness's client, plus an echo round trip: a response-shaped frame whose id it
    awaits, so the bare echo's copy settles it as a gateway's answer would."""

    async def echo(self) -> None:
        request_id = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        frame = {"jsonrpc": "2.0", "id": request_id, "result": ANSWER}
        await self._send(json.dumps(frame, separators=(",", ":")))
        await answer


async def governed(client: Client) -> None:
    result = await client.call(TOOL, {"text": TEXT})
    if result.get("isError") or result["content"][0]["text"] != TEXT:
        raise RuntimeError(f"the governed call failed: {result!r}")


async def echoed(client: Client) -> None:
    await client.echo()


Op = Callable[[Client], Awaitable[None]]


@dataclass
class Target:
    """One server under measurement, and what it spent: its CPU (less its idle rate times
    the wall time) on the calls (or messages) of each round, summed over the rounds."""

    label: str
    url: str
    pid: int
    op: Op
    per_round: int  # calls (or messages) per round, over all clients
    clients: list[Client] = field(default_factory=list)
    idle: float = 0.0  # CPU seconds per second with nothing to do
    upstream: int | None = None  # the upstream child's pid, if there is one
    count: int = 0
    cpu: float = 0.0
    wall: float = 0.0
    upstream_cpu: float = 0.0
    rounds: list[float] = field(default_factory=list)  # µs each, per round

    @property
    def per_op_us(self) -> float:
        return self.cpu / max(1, self.count) * 1e6

    def line(self) -> str:
        spread = f"{min(self.rounds):.0f}-{max(self.rounds):.0f}" if self.rounds else "-"
        text = (
            f"{self.label:<20} {self.per_op_us:7.1f} us CPU each (rounds {spread}), "
            f"{self.count} in {self.wall:.2f} s ({self.count / max(self.wall, 1e-9):.0f}/s), "
            f"idle {self.idle * 1000:.1f} ms/s subtracted"
        )
        if self.upstream is not None:
            upstream = self.upstream_cpu / max(1, self.count) * 1e6
            text += f"; the upstream's own process {upstream:.0f} us each, not counted"
        return text


def upstream_pid(pid: int) -> int | None:
    for child in (c for c, parent in parent_pids().items() if parent == pid):
        with contextlib.suppress(OSError):
            if b"echo_upstream" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    return None


async def load(
    clients: list[Client], op: Op, per_client: int, deadline: float, tally: list[int] | None = None
) -> int:
    """Each client makes up to ``per_client`` calls one after the other, until ``deadline``
    (monotonic); returns how many were made, and counts them in ``tally`` as they end."""
    tally = tally if tally is not None else [0]

    async def sequential(client: Client) -> int:
        done = 0
        while done < per_client and time.monotonic() < deadline:
            await op(client)
            done += 1
            tally[0] += 1
        return done

    return sum(await asyncio.gather(*(sequential(client) for client in clients)))


async def idle_rates(targets: list[Target], seconds: float) -> None:
    """Each process's CPU seconds per second while no client asks anything (all at once)."""
    start, began = [cpu_seconds(t.pid) for t in targets], time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - began
    for target, cpu in zip(targets, start, strict=True):
        target.idle = (cpu_seconds(target.pid) - cpu) / wall


async def measure_round(target: Target, seconds: float) -> None:
    """One window: ``per_round`` calls (or messages), up to ``seconds``."""
    up_start = cpu_seconds(target.upstream) if target.upstream else 0.0
    start, began = cpu_seconds(target.pid), time.monotonic()
    per_client = max(1, -(-target.per_round // len(target.clients)))  # rounded up
    done = await load(target.clients, target.op, per_client, began + seconds)
    wall = time.monotonic() - began
    cpu = cpu_seconds(target.pid) - start - target.idle * wall
    if target.upstream:
        target.upstream_cpu += cpu_seconds(target.upstream) - up_start
    target.count += done
    target.cpu += cpu
    target.wall += wall
    target.rounds.append(cpu / max(1, done) * 1e6)


# ---------------------------------------------------------------- profile (--profile)
#
# py-spy's default mode counts a thread as busy whenever the OS says it is runnable, which on
# a loaded 2-core machine includes waiting for a core, and its --nonblocking samples catch
# threads blocked in a queue or in fsync: it over-counts the points where threads wake each
# other up (pipe and socket writes, executor submits) several times over. So the profile
# samples only the thread that holds the GIL (--gil), and shares out each thread's user CPU
# from /proc over that thread's samples; each thread's system CPU (syscalls, futex wake-ups,
# context switches, SQLite's file I/O) is given apart. SQLite's own user time, spent without
# the GIL, is spread over the writer thread's samples.


@dataclass
class Profile:
    path: str
    calls: int
    seconds: float
    rate: int  # samples per second
    cpu: dict[int, tuple[float, float]]  # thread id → (user, system) CPU seconds over the span


def thread_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """User and system CPU seconds of each thread of the process, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            found[int(task.name)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return found


async def record(clients: list[Client], pid: int, op: Op, options: argparse.Namespace) -> Profile:
    """The same load again, under py-spy for ``--profile-seconds``: the raw stacks of the
    GIL's holder, each thread's CPU from /proc over the same span, the calls made meanwhile."""
    tally = [0]
    seconds = options.profile_seconds
    loading = asyncio.ensure_future(load(clients, op, 10**9, time.monotonic() + seconds + 5, tally))
    spy = None
    try:
        await asyncio.sleep(0.3)  # under way
        before, calls, began = thread_cpu(pid), tally[0], time.monotonic()
        spy = await asyncio.create_subprocess_exec(
            str(PY_SPY),
            *("record", "-p", str(pid), "-d", f"{seconds:g}", "-r", str(options.profile_rate)),
            *("--format", "raw", "-o", options.profile, "--nonblocking", "--threads", "--gil"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(spy.communicate(), seconds + 10)
        after, calls = thread_cpu(pid), tally[0] - calls
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")
    finally:
        if spy is not None and spy.returncode is None:
            spy.kill()
            await spy.wait()
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
    cpu = {}
    for tid, (user, system) in after.items():
        user_before, system_before = before.get(tid, (0.0, 0.0))
        cpu[tid] = (user - user_before, system - system_before)
    return Profile(options.profile, calls, time.monotonic() - began, options.profile_rate, cpu)


# The frames a thread's every sample starts with: Daphne's run loop, a worker's queue.
BASE = re.compile(
    r"\((manage\.py|django/core/management/|orchestrator/management/)"
    r"|^(Server\.run \(daphne/|AsyncioSelectorReactor\.run |Thread\._bootstrap"
    r"|Thread\.run \(threading|_worker \(concurrent/futures/thread|_WorkItem\.run "
    r"|BaseEventLoop\.run_forever |BaseEventLoop\._run_once |Handle\._run \(asyncio/events)"
)
# A sample goes to the first part that any of its frames (above the base) matches.
PARTS: list[tuple[str, str]] = [
    (
        "Daphne/Twisted/autobahn: WebSocket frames, socket I/O",
        r"\((daphne|twisted|autobahn|txaio)/",
    ),
    (
        "thread hops: executor submit, futures, loop wake-ups",
        r"\((concurrent/futures/|threading\.py|queue\.py)|call_soon_threadsafe|_write_to_self"
        r"|_read_from_self|wrap_future|_chain_future|^BaseEventLoop\.run_in_executor ",
    ),
    ("policy: decide", r"\(governance/engine/(policy|conditions)\.py"),
    ("guardrails: input and output", r"\(governance/engine/guardrails/"),
    (
        "audit: building records on the loop (CallLog)",
        r"^CallLog\.|^_digest \(orchestrator/gateway",
    ),
    (
        "audit: canonical JSON, hashes, head signature (writer)",
        r"^(record_document|link|document_digest|sign_head)\b.*\(audit/"
        r"|\(audit/(signing|chainproof)\.py",
    ),
    (
        "audit: SQL through Django, commit (writer)",
        r"^(_commit|chain_append|_insert|_lock_heads) \(audit/",
    ),
    ("audit: group commit on the loop (AuditWriter)", r"^(AuditWriter\.|_settle )"),
    ("rate limiter", r"\(orchestrator/ratelimit\.py"),
    (
        "mcp SDK: OpenTelemetry spans (no-op tracer)",
        r"\((opentelemetry|trace|baggage|context|propagate|propagators)/|\((_decorator|composite)\.py",
    ),
    ("upstream: pool + SDK call_tool, result model_dump", r"\(orchestrator/upstream/"),
    (
        "mcp SDK: stdio tasks, anyio streams, pydantic",
        r"\((mcp|mcp_types|anyio|pydantic|pydantic_core)/",
    ),
    ("gateway state thread (poll)", r"\(governance/selectors|^Gateway\.(_poll|_refresh|refresh) "),
    ("MCP session + JSON-RPC parse", r"\(orchestrator/protocol/"),
    ("gateway: call_tool, other", r"\(orchestrator/gateway\.py"),
    ("consumer: receive, send_json", r"\(orchestrator/consumers\.py"),
    ("Channels/asgiref", r"\((channels|asgiref)/"),
    ("Django, other (writer: cursor, transaction)", r"\(django/"),
    ("asyncio: tasks, futures, pipes", r"\(asyncio/"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in PARTS]
LOOP = "asyncio: _run_once, epoll (the loop itself)"
LINE = re.compile(r":\d+\)$")  # functions are counted whole, not by line


def part_of(body: list[str]) -> str:
    for name, pattern in COMPILED:
        if any(pattern.search(frame) for frame in body):
            return name
    return f"other: {short(body[-1])}" if body else LOOP


def breakdown(profile: Profile, top: int) -> None:
    """µs of CPU per call: each thread's system time, then its user time shared out by its
    GIL samples, by part; then the functions with the most inclusive and self time."""
    samples: dict[int, Counter[tuple[str, ...]]] = {}
    names: dict[int, str] = {}
    with open(profile.path) as raw:
        for line in raw:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            thread, *frames = stack.split(";")
            found = re.search(r"\((\d+)\)", thread)
            if found is None:
                continue
            names[int(found.group(1))] = thread.partition(": ")[2] or thread
            samples.setdefault(int(found.group(1)), Counter())[tuple(frames)] += int(count)
    calls = max(1, profile.calls)
    rate = profile.calls / profile.seconds
    print(
        f"profile: py-spy --gil, {profile.seconds:.1f} s, {calls} calls ({rate:.0f}/s); "
        f"raw stacks in {profile.path}"
    )
    parts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    order = sorted(profile.cpu, key=lambda tid: -sum(profile.cpu[tid]))
    for tid in order:
        user, system = (seconds * 1e6 / calls for seconds in profile.cpu[tid])
        stacks = samples.get(tid, Counter())
        taken = sum(stacks.values())
        if user + system < 1 and not taken:
            continue
        name = names.get(tid, f"thread {tid}")
        held = taken / profile.rate * 1e6 / calls
        print(
            f"  {name:<18} user {user:6.1f} us, system {system:6.1f} us per call; "
            f"GIL held {held:6.1f} us per call ({taken} samples)"
        )
        if system:
            parts[f"kernel: system time ({name})"] += system
        each = user / taken if taken else 0.0
        if not taken:
            parts[f"unsampled user time ({name})"] += user
        for frames, count in stacks.items():
            body = [frame for frame in frames if not BASE.search(frame)]
            parts[part_of(body)] += count * each
            for function in {LINE.sub(")", frame) for frame in body}:
                inclusive[function] += count * each
            if frames:
                own[LINE.sub(")", frames[-1])] += count * each
    whole = sum(parts.values())
    print(f"CPU per governed call by part, us ({whole:.0f} in all):")
    others = sum(us for name, us in parts.items() if name.startswith("other: "))
    for name, us in parts.most_common():
        if not name.startswith("other: "):
            print(f"  {us:7.1f} us  {us / whole:6.1%}  {name}")
    print(f"  {others:7.1f} us  {others / whole:6.1%}  other (stdlib, unknown callers)")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"top {top} functions by {title} user time, us per call (GIL samples):")
        for frame, us in counter.most_common(top):
            print(f"  {us:7.1f} us  {short(frame)}")


def short(frame: str) -> str:
    return frame if len(frame) <= 100 else frame[:97] + "..."


# ---------------------------------------------------------------- main


LEAN_ECHO = (PYTHON, str(ROOT / "bench" / "bare_echo.py"), "--server", "daphne", "--lean")


def servers(uvicorn: bool) -> list[tuple[str, list[str], list[str]]]:
    """(ASGI server, bare echo command, gateway command); an empty command is the harness's
    default, ``manage.py serve``: Daphne, what ships."""
    bare = [PYTHON, str(ROOT / "bench" / "bare_echo.py"), "--server"]
    found = [("daphne", [*bare, "daphne"], [])]
    if uvicorn:
        found.append(("uvicorn", [*bare, "uvicorn"], [PYTHON, "-c", UVICORN_GATEWAY]))
    return found


async def main(options: argparse.Namespace) -> None:
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    call["params"] = {"name": TOOL, "arguments": {"text": TEXT}}
    echo = {"jsonrpc": "2.0", "id": 1, "result": ANSWER}
    print(
        f"{options.clients} clients per server, each one call at a time; {options.rounds} "
        f"rounds taking turns between the servers, after {WARM_UP} calls per client to warm up; "
        f"frames of {len(json.dumps(call))} B (call), {len(json.dumps(echo))} B (echo, answer); "
        "the server process only, its idle CPU rate subtracted"
    )
    rounds = max(1, options.rounds)
    targets: dict[tuple[str, str], Target] = {}
    profile: Profile | None = None
    with fresh_setup(agents=options.clients) as setup, contextlib.ExitStack() as running:
        tokens = setup.tokens[: options.clients]
        for server, bare_argv, gateway_argv in servers(options.uvicorn):
            bare = running.enter_context(serve(setup, argv=bare_argv))
            targets[server, "bare"] = Target(
                f"bare echo ({server})", bare.ws_url, bare.pid, echoed, options.messages // rounds
            )
            gateway = running.enter_context(serve(setup, argv=gateway_argv))
            targets[server, "gateway"] = Target(
                f"governed ({server})",
                gateway.ws_url,
                gateway.pid,
                governed,
                options.calls // rounds,
            )
        lean = running.enter_context(serve(setup, argv=[*LEAN_ECHO]))
        targets["daphne", "lean"] = Target(
            "bare echo, no DB hop (daphne)",
            lean.ws_url,
            lean.pid,
            echoed,
            options.messages // rounds,
        )
        async with contextlib.AsyncExitStack() as connections:
            for target in targets.values():
                initialize = target.op is governed
                for token in tokens:
                    connected = Client.connected(target.url, token, initialize=initialize)
                    target.clients.append(await connections.enter_async_context(connected))
                await load(
                    target.clients, target.op, WARM_UP, time.monotonic() + options.max_seconds
                )
                target.upstream = upstream_pid(target.pid)
            await idle_rates(list(targets.values()), options.idle)
            for _ in range(rounds):
                for target in targets.values():
                    await measure_round(target, options.max_seconds / rounds)
            for target in targets.values():
                print(target.line(), flush=True)
            if options.profile:
                shipped = targets["daphne", "gateway"]
                profile = await record(shipped.clients, shipped.pid, governed, options)
    if profile is not None:
        breakdown(profile, options.profile_top)
    if options.uvicorn:
        for kind in ("bare", "gateway"):
            d, u = targets["daphne", kind].per_op_us, targets["uvicorn", kind].per_op_us
            print(f"{kind:<8} CPU each: daphne {d:7.1f} us, uvicorn {u:7.1f} us (x{u / d:.2f})")
        on_uvicorn = targets["uvicorn", "gateway"].per_op_us / targets["uvicorn", "bare"].per_op_us
        print(f"ratio with both on uvicorn: {on_uvicorn:.3g}")
    call_run, stock = targets["daphne", "gateway"], targets["daphne", "bare"]
    bare_run = targets["daphne", "lean"]
    print(
        f"ratio to the stock Channels echo (its per-message DB hop included): "
        f"{call_run.per_op_us / stock.per_op_us:.3g}"
    )
    ratio = call_run.per_op_us / bare_run.per_op_us
    report(
        "cpu_per_call",
        ratio=ratio,
        goal="≤ 2",
        met=ratio <= 2,
        figures=(
            f"{call_run.per_op_us:.0f} µs CPU per governed call ÷ {bare_run.per_op_us:.0f} µs "
            f"per bare Channels echo message without the DB hop, as the gateway (Daphne, "
            f"{options.clients} clients; gateway process only, idle subtracted); "
            f"{call_run.per_op_us / stock.per_op_us:.3g} against the stock echo "
            f"({stock.per_op_us:.0f} µs)"
        ),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="governed calls measured")
    parser.add_argument("--messages", type=int, default=8000, help="bare echo messages measured")
    parser.add_argument("--clients", type=int, default=8, help="connections, one call each")
    parser.add_argument("--idle", type=float, default=1.5, help="seconds of idle CPU taken")
    parser.add_argument("--rounds", type=int, default=4, help="turns each server takes")
    parser.add_argument("--max-seconds", type=float, default=12.0, help="cap per server")
    parser.add_argument("--no-uvicorn", dest="uvicorn", action="store_false")
    parser.add_argument("--profile", metavar="FILE", help="py-spy raw stacks of the gateway")
    parser.add_argument("--profile-seconds", type=float, default=10.0)
    parser.add_argument("--profile-rate", type=int, default=500, help="samples per second")
    parser.add_argument("--profile-top", type=int, default=25)
    arguments = parser.parse_args()
    if min(arguments.calls, arguments.messages, arguments.clients, arguments.rounds) < 1:
        parser.error("--calls, --messages, --clients and --rounds must be at least 1")
    asyncio.run(main(arguments))
