"""Policy propagation: from an admin's rule change to enforcement on 1,000 connected agents.

The production-like multi-node setup of docs/operations.md, in miniature: a throwaway
PostgreSQL cluster (tests/pg.py) and a private Redis (tests/redis.py) shared by two gateway
processes (``manage.py serve``, default settings: GOVERNANCE_POLL_SECONDS 0.25, the Redis
channel layer for nudges). Tenant ``bench`` has ``--agents`` agents, each with its own token,
allowed ``echo__*`` (the fast echo upstream, bench/echo_upstream.py); they connect over
WebSocket, half to each gateway, and one call each checks that ``echo__echo`` is allowed.

**The change.** A warm admin process (Django set up and connected before the clock starts)
runs ``rule_add --tenant bench --tool 'echo__*' --effect deny`` through ``call_command``: the
command an operator types, and the service behind it (``rule_create``: one transaction with
the rule, the tenant's version bump and the admin record in the audit chain, then the
channel-layer nudge after commit), a change of the same shape as a save in the admin site or
a policy import. It runs warm because the interpreter's start comes before the change
exists. t0 is taken right before the command; t_commit in the first on-commit callback (right
after COMMIT returned, before the nudge is sent); the nudge's send is timed too.

**Observing enforcement.** The admin process tells its commit at once; then every agent calls
``echo__echo`` (all at once, like the baseline) and, while it is still allowed, again, with at
most one call in flight and at most one call per ``--interval`` per agent (so the probe never
has more calls in flight than the baseline burst), until a call is refused with -32001
(permission denied) or ``--probe-seconds`` pass. A denied answer proves the new policy was
enforced on that agent by the time it arrived; the allowed answer before it proves it was not
yet when that request was sent. Each agent's enforcement thus lies between its last allowed
send (or t0) and its denied answer's arrival. The figure is the conservative end, **denied
answer's arrival - t0**, per agent: max over all agents (and p50); the other two are printed.
Each agent's ``notifications/tools/list_changed`` (the deny hides the tool) is timed too: its
gateway sends it right after swapping in the new policy, so it shows when each gateway applied
the change, but it is not counted as enforcement.

**Baseline**, same run, same agents, before the change: the time for every agent to get one
answer to one call, all sent at once (max; p50 too): the least time in which an answer from
every agent can be observed at all. The probe's first round is such a burst, sent a few
milliseconds after the commit: its calls are decided as the gateways read them, so those the
gateways read before applying the change are allowed, and their agents are observed in the
next round. So the figure is about one burst when the gateways apply the change before
reading the first round, and up to about two when after. Also printed: the same burst after
the change (all denied), and the CPU used meanwhile by this benchmark's processes and by
everything else on the machine (other work there slows every figure).

    .venv/bin/python bench/policy_propagation.py [--agents 1000] [--interval 0.1]

``--probe-delay S`` (diagnosis) starts the probe S seconds after the commit, so that the
gateways apply the change while idle; list_changed then times that alone. Needs Debian's
``postgresql`` and ``redis-server`` packages. Prints ratio = propagation max / baseline max.

Goal on the reference machine (2 cores), issue 8: every one of the 1,000 agents enforces the
change within 1 s of it (max <= 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    PYTHON,
    Gateway,
    RpcError,
    WsClient,
    cpu_seconds,
    median,
    parent_pids,
    percentile,
    prepare,
    raise_open_files,
    report,
    serve,
)
from tests.pg import PostgresCluster, pg_bin  # noqa: E402
from tests.redis import RedisServer  # noqa: E402

TOOL = "echo__echo"
ARGS = {"text": "are we still allowed?"}
PERMISSION_DENIED = -32001  # docs/api.md: a deny rule applies
GOAL_SECONDS = 1.0
LIST_CHANGED = "notifications/tools/list_changed"

# The admin: Django set up and connected first, then on a line on stdin, `rule_add --effect
# deny`. governance_nudge is what the transaction's on-commit callback calls (looked up when
# it runs), so wrapping it times the commit and the nudge without touching the transaction.
_ADMIN_SCRIPT = r"""
import io, json, sys, time
import django
django.setup()
from django.core.management import call_command, load_command_class
from django.db import connection
from governance.services import versions

def say(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()

times = {}
nudge = versions.governance_nudge

def timed_nudge(**kwargs):
    times["t_commit"] = time.monotonic()
    say(event="committed", t=times["t_commit"])
    nudge(**kwargs)
    times["t_nudged"] = time.monotonic()

versions.governance_nudge = timed_nudge
load_command_class("governance", "rule_add")
connection.ensure_connection()
say(event="ready")
sys.stdin.readline()
times["t0"] = time.monotonic()
call_command(
    "rule_add", tenant="bench", tool="echo__*", effect="deny",
    description="bench: echo off for everyone", stdout=io.StringIO(),
)
say(event="done", **times)
"""


class Agent(WsClient):
    """The harness client, also noting when each answer and the first tool-list change arrive
    (in the reader task, as each frame is read: not when the awaiting task resumes)."""

    gateway = 0
    answered_at = 0.0
    list_changed_at: float | None = None

    def _received(self, text: str | bytes) -> None:
        now = time.monotonic()
        message = json.loads(text)
        if "id" in message:
            self.answered_at = now
        elif message.get("method") == LIST_CHANGED and self.list_changed_at is None:
            self.list_changed_at = now
        super()._received(text)


@dataclass
class Probe:
    agent: Agent
    calls: int = 0
    first_at: float | None = None  # the first answer's arrival
    allowed_at: list[float] = field(default_factory=list)  # allowed answers after the commit
    last_allowed_sent: float | None = None
    denied_sent: float | None = None
    denied_at: float | None = None
    error: str = ""


async def burst(agents: list[Agent], seconds: float) -> tuple[float, list[float], list[Any]]:
    """Every agent calls once, all at once. Returns the start, each answer's arrival and each
    outcome (True: allowed, else the error code or text)."""

    async def one(agent: Agent) -> Any:
        try:
            await agent.call(TOOL, ARGS)
            return True
        except RpcError as exc:
            return exc.code
        except Exception as exc:
            return repr(exc)

    start = time.monotonic()
    async with asyncio.timeout(seconds):
        outcomes = await asyncio.gather(*(one(a) for a in agents))
    return start, [a.answered_at for a in agents], outcomes


async def probe(agent: Agent, deadline: float, interval: float) -> Probe:
    """Call until refused: at most one call in flight, at most one per ``interval``."""
    found = Probe(agent)
    while (now := time.monotonic()) < deadline:
        found.calls += 1
        try:
            async with asyncio.timeout(deadline - now):
                await agent.call(TOOL, ARGS)
        except RpcError as exc:
            found.first_at = found.first_at or agent.answered_at
            if exc.code == PERMISSION_DENIED:
                found.denied_sent, found.denied_at = now, agent.answered_at
            else:
                found.error = str(exc)
            return found
        except Exception as exc:  # the deadline, or a lost connection
            found.error = repr(exc)
            return found
        found.first_at = found.first_at or agent.answered_at
        found.allowed_at.append(agent.answered_at)
        found.last_allowed_sent = now
        await asyncio.sleep(max(0.0, now + interval - time.monotonic()))
    found.error = found.error or "still allowed at the deadline"
    return found


async def connect_all(
    gateways: list[Gateway], tokens: list[str], concurrency: int, stack: contextlib.AsyncExitStack
) -> list[Agent]:
    """Agent i on gateway i mod len(gateways), each with its own token, initialized; all
    closed together (concurrently) when ``stack`` closes."""
    limit = asyncio.Semaphore(concurrency)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    ups: list[asyncio.Future[Agent]] = [loop.create_future() for _ in tokens]

    async def hold(i: int, token: str) -> None:
        try:
            async with limit:
                cm = Agent.connected(gateways[i % len(gateways)].ws_url, token)
                agent = await cm.__aenter__()
            try:
                agent.gateway = i % len(gateways)
                ups[i].set_result(agent)
                await done.wait()
            finally:
                await cm.__aexit__(None, None, None)
        except BaseException as exc:
            if not ups[i].done():
                ups[i].set_exception(exc)
            raise

    tasks = [asyncio.create_task(hold(i, token)) for i, token in enumerate(tokens)]

    async def close_all() -> None:
        done.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*ups, return_exceptions=True)  # retrieved: nothing left unseen

    stack.push_async_callback(close_all)
    async with asyncio.timeout(60):
        return list(await asyncio.gather(*ups))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def spread(values: list[float]) -> str:
    if not values:
        return "none"
    return f"p50 {ms(median(values))}, p99 {ms(percentile(values, 99))}, max {ms(max(values))}"


def machine_busy() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def family_cpu(root: int, skip: int) -> float:
    """CPU seconds of ``root`` and every live descendant but ``skip``: this script, its
    gateways (and their upstreams), PostgreSQL and Redis. (``skip``, the admin process, exits
    in between: its few milliseconds of work count as another process's.)"""
    parents = parent_pids()
    family, total = {root}, 0.0
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in family and pid not in family and pid != skip:
                family.add(pid)
                grew = True
    for pid in family:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


async def measure(
    args: argparse.Namespace, gateways: list[Gateway], setup_env: dict[str, str]
) -> tuple[float, bool, str]:
    """Connect, baseline, change, probe; print the details. Returns the ratio, whether the
    goal is met, and the figures."""
    admin = await asyncio.create_subprocess_exec(
        PYTHON,
        "-c",
        _ADMIN_SCRIPT,
        env=setup_env,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert admin.stdin is not None
    assert admin.stdout is not None

    async def admin_says(event: str) -> dict[str, Any]:
        async with asyncio.timeout(30):
            line = await admin.stdout.readline()
        if not line:
            raise RuntimeError("the admin process exited early (its error is above)")
        said = json.loads(line)
        if said.get("event") != event:
            raise RuntimeError(f"expected {event!r} from the admin process, got {said}")
        return said

    try:
        async with contextlib.AsyncExitStack() as stack:
            started = time.monotonic()
            agents = await connect_all(gateways, args.tokens, args.connect_concurrency, stack)
            print(f"connected {len(agents)} agents in {time.monotonic() - started:.1f} s")

            # Warm-up: every connection's first call (and the upstream sessions) out of the way.
            _, _, outcomes = await burst(agents, 20)
            if bad := [o for o in outcomes if o is not True]:
                raise RuntimeError(f"{len(bad)} warm-up calls were not allowed: {bad[:3]}")
            await asyncio.sleep(0.5)
            cpu_start, busy_start = family_cpu(os.getpid(), admin.pid), machine_busy()
            clock_start = time.monotonic()
            start, arrivals, outcomes = await burst(agents, 20)
            if bad := [o for o in outcomes if o is not True]:
                raise RuntimeError(f"{len(bad)} baseline calls were not allowed: {bad[:3]}")
            baseline = [t - start for t in arrivals]
            await asyncio.sleep(0.5)  # the audit writers and polls settle

            await admin_says("ready")
            admin.stdin.write(b"go\n")
            await admin.stdin.drain()
            committed = await admin_says("committed")
            await asyncio.sleep(args.probe_delay)
            deadline = committed["t"] + args.probe_delay + args.probe_seconds
            probes = await asyncio.gather(*(probe(a, deadline, args.interval) for a in agents))
            done = await admin_says("done")
            await asyncio.sleep(0.2)
            wave_start, wave_arrivals, wave_outcomes = await burst(agents, 20)
            elapsed = time.monotonic() - clock_start
            ours, busy = family_cpu(os.getpid(), admin.pid) - cpu_start, machine_busy() - busy_start
    finally:
        if admin.returncode is None:
            admin.kill()
        await admin.wait()

    t0, t_commit = done["t0"], done["t_commit"]
    enforced = [p for p in probes if p.denied_at is not None]
    upper = [p.denied_at - t0 for p in enforced]
    sent = [p.denied_sent - t0 for p in enforced]
    lower = [(p.last_allowed_sent or t0) - t0 for p in enforced]
    failed = [p for p in probes if p.denied_at is None]
    noticed = [a for a in agents if a.list_changed_at is not None]
    applied = [a.list_changed_at - t0 for a in noticed]
    denied_wave = [t - wave_start for t in wave_arrivals]
    wave_denied = sum(1 for o in wave_outcomes if o == PERMISSION_DENIED)
    first = min((p.first_at for p in probes if p.first_at is not None), default=t0)

    n, per = len(agents), [sum(a.gateway == g for a in agents) for g in range(len(gateways))]
    poll = setup_env.get("GOVERNANCE_POLL_SECONDS", "0.25 (default)")
    print(
        f"setup: {n} agents (a token each), {len(gateways)} gateways "
        f"({' + '.join(map(str, per))} agents), PostgreSQL + Redis, GOVERNANCE_POLL_SECONDS={poll}"
    )
    print(f"baseline, one allowed call each, all at once: {spread(baseline)}")
    print(
        f"change (rule_add --effect deny): committed {ms(t_commit - t0)} after t0; nudge sent "
        f"{ms(done['t_nudged'] - t_commit)} after the commit"
    )
    # Allowed answers that arrived after their gateway had told its agents of the change:
    # calls decided on the old policy that still ran after the new one was in force.
    told_at = {
        g: min((a.list_changed_at for a in noticed if a.gateway == g), default=float("inf"))
        for g in range(len(gateways))
    }
    late = sum(t > told_at[p.agent.gateway] for p in probes for t in p.allowed_at)
    print(
        f"probe: calls from {ms(committed['t'] + args.probe_delay - t0)} after t0, first answer "
        f"at {ms(first - t0)}; {sum(p.calls for p in probes)} calls; "
        f"{sum(1 for p in probes if p.allowed_at)} agents still allowed after the commit "
        f"({sum(len(p.allowed_at) for p in probes)} allowed answers, {late} of them arriving "
        f"after their gateway's first list_changed)"
    )
    print(f"enforced: denied answer's arrival - t0 ({len(enforced)}/{n}): {spread(upper)}")
    print(f"  the denied request's send - t0:               {spread(sent)}")
    print(f"  lower bound: last allowed send (or t0) - t0:  {spread(lower)}")
    print(f"list_changed notification's arrival - t0 ({len(noticed)}/{n}): {spread(applied)}")
    for g in range(len(gateways)):
        mine = [p.denied_at - t0 for p in enforced if p.agent.gateway == g]
        told = [a.list_changed_at - t0 for a in noticed if a.gateway == g]
        print(
            f"  gateway {g}: enforced max {ms(max(mine)) if mine else '-'}; list_changed "
            f"{ms(min(told)) if told else '-'} .. {ms(max(told)) if told else '-'}"
        )
    print(f"after: one call each, all at once ({wave_denied}/{n} denied): {spread(denied_wave)}")
    print(
        f"CPU from the baseline to the end ({elapsed:.1f} s, {os.cpu_count()} cores): this "
        f"benchmark's processes {ours:.1f} s, other processes {max(0.0, busy - ours):.1f} s"
    )
    for p in failed[:5]:
        print(f"  not enforced: an agent on gateway {p.agent.gateway}: {p.error}")

    if failed or not upper:
        figures = f"{len(failed)}/{n} agents never saw the deny within {args.probe_seconds} s"
        return float("inf"), False, figures
    worst, base = max(upper), max(baseline)
    figures = (
        f"propagation to {n} agents on {len(gateways)} gateways: max {ms(worst)}, p50 "
        f"{ms(median(upper))} (denied answer - t0); gateways applied it by "
        f"{ms(max(applied)) if applied else '-'} (list_changed); baseline (one call each, all "
        f"at once) max {ms(base)}"
    )
    return worst / base, worst <= GOAL_SECONDS, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument(
        "--interval", type=float, default=0.1, help="least time between one agent's probe calls"
    )
    parser.add_argument("--probe-seconds", type=float, default=10.0, help="give up after this")
    parser.add_argument(
        "--probe-delay",
        type=float,
        default=0.0,
        help="diagnosis: start probing this long after the commit, so that the gateways apply "
        "the change while idle (list_changed then times that alone; the figure includes it)",
    )
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--poll", type=float, help="GOVERNANCE_POLL_SECONDS (default: 0.25)")
    args = parser.parse_args()

    try:
        pg_bin("initdb")
        pg_bin("postgres")
        RedisServer(Path(tempfile.gettempdir()))
    except FileNotFoundError as exc:
        sys.exit(f"{exc}: install Debian's postgresql and redis-server packages (apt)")
    raise_open_files()
    # A SIGTERM unwinds like Ctrl-C does: every process started here is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    env: dict[str, str] = {}
    if args.poll is not None:
        env["GOVERNANCE_POLL_SECONDS"] = str(args.poll)
    # The PostgreSQL directory is a top-level temporary one: as root, the server runs as the
    # postgres user, who must reach it (see tests/conftest.py).
    with (
        tempfile.TemporaryDirectory(prefix="bench-propagation-pg-") as pg_dir,
        tempfile.TemporaryDirectory(prefix="bench-propagation-") as work,
        contextlib.ExitStack() as stack,
    ):
        started = time.monotonic()
        postgres = PostgresCluster(Path(pg_dir))
        redis = RedisServer(Path(work) / "redis")
        stack.callback(postgres.stop)
        stack.callback(redis.stop)
        postgres.start()
        redis.start()
        env["DATABASE_URL"] = postgres.create_database("bench")
        env["REDIS_URL"] = redis.url()
        try:
            setup = prepare(Path(work) / "data", agents=args.agents, env=env)
        except subprocess.CalledProcessError as exc:
            sys.exit(f"setting up the tenant failed: {exc}\n{exc.stderr}")
        args.tokens = setup.tokens
        gateways = [stack.enter_context(serve(setup)) for _ in range(args.gateways)]
        took = time.monotonic() - started
        print(f"set up PostgreSQL, Redis and {args.gateways} gateways in {took:.1f} s")
        ratio, met, figures = asyncio.run(measure(args, gateways, setup.env))
    # After every process is stopped: nothing of theirs is printed after the result.
    report("policy_propagation", ratio=ratio, goal="≤ 1 s", met=met, figures=figures)


if __name__ == "__main__":
    main()
