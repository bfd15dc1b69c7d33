"""Redis restarted under load: no WebSocket closes, every call gets an answer, nothing stays
wedged.

Two gateways and a Celery worker share one PostgreSQL and one Redis of this module's own.
Agents on WebSocket connections to both gateways make paced calls of a tool that a rate limit
counts, so every call goes through the Redis counters. Redis is stopped for a few seconds,
then started again on the same port, empty (no persistence), as a restarted Redis is.

- While it is down, calls are refused at once with -32007 "rate limits cannot be checked
  right now" (fail closed), and a policy change still commits (the nudge after commit is
  best-effort).
- Once it is back, every call succeeds again within a bound.
- The gateways' channel-layer listeners re-join their group: the nodes run with a governance
  poll longer than the module, so only the Redis nudge can bring a policy change to agents
  on both nodes within seconds.
- The Celery broker reconnects: a call that waits on a slow check completes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.cluster.conftest import Cluster, Node, cluster_running
from tests.e2e.conftest import wait_for
from tests.pg import PostgresCluster
from tests.redis import RedisServer

pytestmark = pytest.mark.e2e


POLL_SECONDS = "600"  # the governance poll: far longer than this module runs
PACE = 0.1  # seconds between one connection's calls
MAX_CALLS = 400  # per connection: the load is bounded in count as well as in time
ANSWER_BOUND = 3.0  # no call may wait longer than this for its answer, Redis up or down
DOWN_SECONDS = 2.0  # how long Redis stays down (at least)
RECOVERED_WITHIN = 3.0  # after Redis is back, every call succeeds from this long on
REJOINED_WITHIN = 10.0  # the nudge listeners' retries: 1 s, 2 s, 4 s...
NUDGE_WITHIN = 3.0  # a policy change reaches agents on both nodes (by the nudge alone)
SLOW_CHECK_WITHIN = 30.0  # a call waiting on a slow check, once Redis is back
LOAD_TOOL = "time__get_current_time"
UNAVAILABLE = "rate limits cannot be checked right now"
GROUP_KEY = "asgi:group:governance"  # channels_redis's key for the gateways' nudge group

# Every agent: 100,000 calls a minute, counted in Redis. The slow check: alice's calls of
# testkit__echo wait for a (stand-in, short) injection_similarity verdict.
SETUP = """
from django.db import transaction
from governance.models import Agent, Guardrail, RateLimit, Tenant
from governance.services.guardrails import guardrail_save
from governance.services.versions import tenant_version_bump
tenant = Tenant.objects.get(slug="acme")
with transaction.atomic():
    RateLimit.objects.create(tenant=tenant, scope="agent", calls=100000, window_seconds=60)
    tenant_version_bump(tenant_id=tenant.id)
guardrail_save(guardrail=Guardrail(
    tenant=tenant, agent=Agent.objects.get(tenant=tenant, name="alice"), tool="testkit__echo",
    name="injection_similarity", stage="input", action="flag", mode="blocking",
    failure_mode="closed", timeout_seconds=50,
))
"""


@pytest.fixture(scope="module")
def redis_server_own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-restarted"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(
    postgres_cluster: PostgresCluster,
    redis_server_own: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """The shared cluster set-up, on this module's own Redis (it restarts it), with the rate
    limit and the slow check."""
    data_dir = tmp_path_factory.mktemp("cluster")
    with cluster_running(postgres_cluster, redis_server_own.url(), data_dir) as c:
        c.manage("shell", "-c", SETUP)
        yield c


@dataclass
class Site:
    """Two gateways (their governance poll too slow to matter) and a worker."""

    cluster: Cluster
    redis: RedisServer
    nodes: list[Node]
    worker: subprocess.Popen[bytes]
    store: redis.Redis

    def members(self) -> int:
        """How many gateways' nudge listeners are in their channel-layer group now."""
        return self.store.zcard(GROUP_KEY)


@pytest.fixture(scope="module")
def site(cluster: Cluster, redis_server_own: RedisServer) -> Iterator[Site]:
    nodes = [cluster.start(name, GOVERNANCE_POLL_SECONDS=POLL_SECONDS) for name in ("a", "b")]
    worker = cluster.worker(
        "w",
        CELERY_WORKER_INCLUDE="tests.slowcheck_fixtures",  # imported before the pool forks
        SLOW_CHECK_STAND_IN="injection_similarity",
        SLOW_CHECK_STAND_IN_SECONDS="0.2",
    )
    log = cluster.data_dir / "worker-w.log"
    wait_for(lambda: "ready." in log.read_text(), 60, "the worker to start")
    store = redis.Redis.from_url(redis_server_own.url(), socket_timeout=2)
    s = Site(cluster, redis_server_own, nodes, worker, store)
    wait_for(lambda: s.members() == 2, 10, "both gateways' nudge listeners")
    yield s
    store.close()


@dataclass
class Call:
    """One tools/call: when it was sent and answered (monotonic), and how."""

    sent: float
    answered: float | None = None  # None: no answer within ANSWER_BOUND
    code: int | None = None  # the JSON-RPC error code; None for a result
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.answered is not None and self.code is None


@dataclass
class Agent:
    """One agent's raw MCP session over WebSocket (handshake era): requests matched to their
    answers by id, notifications kept with the time they came, and how the socket closed."""

    name: str
    node: str
    ws: ClientConnection
    calls: list[Call] = field(default_factory=list)
    notes: list[tuple[float, str]] = field(default_factory=list)
    closed: str = ""
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _waiting: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.node}"

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                waiter = self._waiting.pop(message.get("id"), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
                elif "method" in message:
                    self.notes.append((time.monotonic(), message["method"]))
        except ConnectionClosed:
            pass
        self.closed = f"closed: {self.ws.close_code} {self.ws.close_reason}"

    async def request(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        request_id = next(self._ids)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = waiter
        await self.ws.send(
            json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        )
        try:
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiting.pop(request_id, None)

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> Call:
        call = Call(sent=time.monotonic())
        with contextlib.suppress(TimeoutError):
            answer = await self.request(
                "tools/call", {"name": tool, "arguments": arguments}, timeout
            )
            call.answered = time.monotonic()
            if "error" in answer:
                call.code, call.message = answer["error"]["code"], answer["error"]["message"]
            elif answer["result"].get("isError"):
                call.code, call.message = 0, json.dumps(answer["result"])[:300]
        return call

    async def load(self, stop: asyncio.Event) -> None:
        """Paced calls of LOAD_TOOL until ``stop``, at most MAX_CALLS."""
        for _ in range(MAX_CALLS):
            if stop.is_set() or self.closed:
                return
            self.calls.append(await self.call(LOAD_TOOL, {"timezone": "UTC"}, ANSWER_BOUND))
            await asyncio.sleep(PACE)

    def listed_changed_after(self, moment: float) -> float | None:
        """When the first tools/list_changed after ``moment`` came, if one did."""
        return next(
            (t for t, m in self.notes if t > moment and m == "notifications/tools/list_changed"),
            None,
        )


@contextlib.asynccontextmanager
async def agent(node: Node, name: str, token: str) -> AsyncIterator[Agent]:
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(
        node.ws_url, subprotocols=[Subprotocol("mcp")], additional_headers=headers
    ) as ws:
        a = Agent(name, node.name, ws)
        a._reader = asyncio.create_task(a.read())
        params = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "redis-restart-test", "version": "1"},
        }
        answer = await a.request("initialize", params, 10)
        assert "result" in answer, answer
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        try:
            yield a
        finally:
            a._reader.cancel()


async def test_a_redis_restart_mid_load_closes_nothing_and_wedges_nothing(site: Site):
    cluster, nodes = site.cluster, site.nodes
    async with contextlib.AsyncExitStack() as stack:
        loaders = [
            await stack.enter_async_context(agent(node, name, cluster.tokens[name]))
            for name in ("bob", "carol")
            for node in nodes
        ]
        alice = await stack.enter_async_context(agent(nodes[0], "alice", cluster.tokens["alice"]))
        everyone = [*loaders, alice]
        for a in loaders[:2]:  # each node's upstream up
            assert (await a.call(LOAD_TOOL, {"timezone": "UTC"}, 15)).ok
        before = await alice.call("testkit__echo", {"text": "before"}, SLOW_CHECK_WITHIN)
        assert before.ok, before

        stop = asyncio.Event()
        load = asyncio.gather(*(a.load(stop) for a in loaders))
        await asyncio.sleep(1.5)

        # Redis goes away; a policy change made meanwhile still commits.
        down_at = time.monotonic()
        await asyncio.to_thread(site.redis.stop)
        change_started = time.monotonic()
        rule = ("--tenant", "acme", "--agent", "carol", "--tool", "testkit__echo")
        await asyncio.to_thread(cluster.manage, "rule_add", *rule)
        change_seconds = time.monotonic() - change_started
        await asyncio.sleep(max(0.0, down_at + DOWN_SECONDS - time.monotonic()))
        await asyncio.to_thread(site.redis.start)
        up_at = time.monotonic()

        assert [(a.label, a.closed) for a in everyone if a.closed] == []  # no WebSocket closed

        # The nudge listeners re-join their group, which the restart forgot.
        await asyncio.to_thread(
            wait_for, lambda: site.members() == 2, REJOINED_WITHIN, "the listeners to re-join"
        )
        rejoined_after = time.monotonic() - up_at
        await asyncio.sleep(max(0.0, up_at + RECOVERED_WITHIN + 1 - time.monotonic()))

        # A policy change after the restart reaches bob on both nodes by the nudge alone. The
        # refresh it brings applies carol's change, made while Redis was down, too.
        change_at = time.monotonic()
        rule = ("--tenant", "acme", "--agent", "bob", "--tool", "testkit__echo")
        await asyncio.to_thread(cluster.manage, "rule_add", *rule)
        changed_at = time.monotonic()
        bobs = [a for a in loaders if a.name == "bob"]
        await asyncio.to_thread(
            wait_for,
            lambda: all(
                a.listed_changed_after(change_at if a in bobs else down_at) for a in loaders
            ),
            NUDGE_WITHIN,
            "tools/list_changed to bob and carol on both nodes",
        )
        seen = {a.label: a.listed_changed_after(down_at) for a in loaders}
        for a in bobs:
            echoed = await a.call("testkit__echo", {"text": "hello"}, 15)
            assert echoed.ok, (a.label, echoed)

        # The broker reconnected: a call waiting on a slow check completes.
        after = await alice.call("testkit__echo", {"text": "after"}, SLOW_CHECK_WITHIN + 5)
        stop.set()
        await asyncio.wait_for(load, ANSWER_BOUND + 5)
        closed = [(a.label, a.closed) for a in everyone if a.closed]

    refusals = [c.answered - c.sent for a in loaders for c in a.calls if c.code and c.answered]
    first_ok = [
        next((c.answered for c in a.calls if c.sent > up_at and c.ok), None) for a in loaders
    ]
    recovered_after = max(t - up_at if t else float("inf") for t in first_ok)
    seen_after = {label: round(t - changed_at, 2) for label, t in seen.items() if t}
    print(
        f"\nRedis down {up_at - down_at:.1f} s; rule_add meanwhile took {change_seconds:.1f} s; "
        f"refusals took at most {max(refusals, default=0):.3f} s; every connection's calls "
        f"succeeded again {recovered_after:.2f} s after Redis was back; the listeners re-joined "
        f"{rejoined_after:.1f} s after Redis was back; list_changed after the next rule_add "
        f"returned (s): {seen_after}; slow check after the restart answered in "
        f"{after.answered - after.sent if after.answered else -1:.1f} s"
    )
    assert closed == []  # no WebSocket closed
    assert all(n.alive() for n in nodes)
    assert site.worker.poll() is None
    assert change_seconds < 15

    refused = 0
    for a in loaders:
        assert len(a.calls) >= 20, a.label
        for c in a.calls:
            assert c.answered is not None, (a.label, "no answer", c)
            assert c.answered - c.sent < ANSWER_BOUND
            if c.ok:
                continue
            # Only while Redis was down (or a call that straddled its stop), and only clearly.
            assert (c.code, c.message) == (-32007, UNAVAILABLE), (a.label, c)
            assert down_at - ANSWER_BOUND < c.sent < up_at + RECOVERED_WITHIN, (a.label, c)
            refused += 1
        recovered = [c for c in a.calls if c.sent > up_at + RECOVERED_WITHIN]
        assert len(recovered) >= 5, a.label  # and all of them succeeded (above)
    assert refused >= len(loaders), "the outage never reached the calls"

    assert after.ok, after

    # Nothing lost: every call the agents made has its outcome in the audit trail, as told.
    outcomes = cluster.audit(
        "kind = 'outcome' AND tool = %s AND agent_name IN ('bob', 'carol')", (LOAD_TOOL,)
    )
    made = [c for a in loaders for c in a.calls]
    assert len(outcomes) == len(made) + 2  # the two warm-up calls
    assert sum(o["outcome"] == "rate_limited" for o in outcomes) == refused
    verdicts = cluster.audit("kind = 'verdict' AND agent_name = 'alice'")
    assert len(verdicts) == 2
    assert "acme: OK" in cluster.manage("audit_verify", "--tenant", "acme")


FROZEN_ANSWER_BOUND = 2.5  # a frozen Redis costs a call the rate limiter's 1 s socket timeout
CHANGE_BOUND = 8.0  # rule_add: a process start (~2 s) and a commit, plus a bounded nudge


class NudgeHung(AssertionError):
    """A policy change hung as long as Redis did."""


async def test_a_frozen_redis_costs_calls_a_second_and_hangs_no_policy_change(site: Site):
    """Redis hangs (SIGSTOP: connections are accepted, nothing answers), rather than going
    away. Calls are refused within about a second each, no WebSocket closes, and a policy
    change made meanwhile should return in bounded time: the nudge after its commit is
    best-effort."""
    cluster = site.cluster

    async def twice(a: Agent) -> list[Call]:
        return [await a.call(LOAD_TOOL, {"timezone": "UTC"}, 2 * FROZEN_ANSWER_BOUND) for _ in "12"]

    async with contextlib.AsyncExitStack() as stack:
        agents = [
            await stack.enter_async_context(agent(node, "dave", cluster.tokens["dave"]))
            for node in site.nodes
        ]
        for a in agents:
            assert (await a.call(LOAD_TOOL, {"timezone": "UTC"}, 15)).ok
        site.redis.freeze()
        try:
            change_at = time.monotonic()
            rule = ("--tenant", "acme", "--agent", "dave", "--tool", "testkit__pid")
            change = asyncio.ensure_future(asyncio.to_thread(cluster.manage, "rule_add", *rule))
            frozen = [c for calls in await asyncio.gather(*map(twice, agents)) for c in calls]
            with contextlib.suppress(TimeoutError):
                left = change_at + CHANGE_BOUND - time.monotonic()
                await asyncio.wait_for(asyncio.shield(change), max(0.0, left))
            change_seconds = time.monotonic() - change_at if change.done() else None
        finally:
            site.redis.thaw()
        await asyncio.wait_for(change, 60)  # it does finish once Redis answers again
        thawed = [await a.call(LOAD_TOOL, {"timezone": "UTC"}, ANSWER_BOUND) for a in agents]
        closed = [(a.label, a.closed) for a in agents if a.closed]

    waits = [round(c.answered - c.sent, 2) for c in frozen if c.answered]
    print(f"\nRedis frozen: calls refused after {waits} s; rule_add took {change_seconds} s")
    assert closed == []
    for c in frozen:
        assert c.answered is not None, c
        assert c.answered - c.sent < FROZEN_ANSWER_BOUND, c
        assert (c.code, c.message) == (-32007, UNAVAILABLE), c
    assert all(c.ok for c in thawed), thawed
    if change_seconds is None:
        raise NudgeHung(f"rule_add still running {CHANGE_BOUND} s into the freeze")
