"""A Celery worker SIGKILLed in the middle of a slow check, on the production setup: Redis as
the broker, PostgreSQL as the database, a real gateway and a real client.

An agent's ``tools/call`` waits on a blocking ``injection_similarity`` check. In the workers
here that name is answered by ``sleepy`` (tests/slowcheck_fixtures.py, SLOW_CHECK_STAND_IN):
it writes its pid, then sleeps, so the kill lands mid-check every time, and the model's
seconds of loading do not slow the test down. The worker running it is killed; the agent
still gets its answer, the check ran to completion exactly once more (attempt 2), exactly one
verdict is recorded, and the audit chain verifies.

- **Pool child killed**: acks_late with reject_on_worker_lost puts the message back on the
  Redis queue once the worker notices the dead child (at once, or at its pool check, every
  5 s); a new child runs it.
- **Whole worker killed**: the message stays in Redis's ``unacked`` hash, where only the
  visibility timeout (1 h) would bring it back; the beat sweep re-sends the row at once. When
  the old message does come back, running it again writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection
from mcp import Client

from examples.mcp_ws import websocket_client
from tests.cluster.conftest import Cluster, Node
from tests.e2e.conftest import alive, wait_for, worker_stop

pytestmark = pytest.mark.e2e


TOOL = "testkit__echo"
TEXT = "an evil payload"  # sleepy flags "evil"
SLEEP = 3.0  # seconds each attempt of the check takes
CHECK_TIMEOUT = 50  # seconds the call waits for the verdict (the guardrail's timeout_seconds)
ANSWER_WITHIN = 45.0  # seconds after the kill the agent must have its answer

# Alice's calls of testkit__echo wait for the slow injection check of their arguments, and
# fail closed: no verdict in time and the call is blocked, so a result proves the verdict came.
GUARDRAIL = f"""
from governance.models import Agent, Guardrail, Tenant
from governance.services.guardrails import guardrail_save
tenant = Tenant.objects.get(slug="acme")
guardrail_save(guardrail=Guardrail(
    tenant=tenant, agent=Agent.objects.get(tenant=tenant, name="alice"), tool="{TOOL}",
    name="injection_similarity", stage="input", action="flag", mode="blocking",
    failure_mode="closed", timeout_seconds={CHECK_TIMEOUT},
))
"""
SWEEP = """
from governance.tasks import sweep_slow_checks
print("swept", sweep_slow_checks(older_than_seconds=0))
"""
# A later beat sweep finds nothing to re-send; the audit chain verifies.
SETTLED = (
    SWEEP
    + """
from django.core.management import call_command
call_command("audit_verify", tenant="acme")
"""
)


@pytest.fixture(scope="module")
def node(cluster: Cluster) -> Node:
    cluster.manage("shell", "-c", GUARDRAIL)
    return cluster.start("gw")


@pytest.fixture
def workers(cluster: Cluster) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Starts workers (each ready when returned), stopped after the test, so each test's
    workers are the only ones."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        started.append(start_worker(cluster, name))
        return started[-1]

    yield start
    for worker in started:
        worker_stop(worker)


@pytest.fixture
def broker(cluster: Cluster) -> Iterator[redis.Redis]:
    """The cluster's Redis database (the Celery broker); each test starts a new pid file."""
    pid_file(cluster).unlink(missing_ok=True)
    client = redis.Redis.from_url(cluster.redis_url)
    yield client
    client.close()


def pid_file(cluster: Cluster) -> Path:
    return cluster.data_dir / "check-pids"


def pids(cluster: Cluster) -> list[int]:
    """The pool children that started the check, in order."""
    path = pid_file(cluster)
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def start_worker(cluster: Cluster, name: str) -> subprocess.Popen[bytes]:
    worker = cluster.worker(
        name,
        CELERY_WORKER_INCLUDE="tests.slowcheck_fixtures",  # imported before the pool forks
        SLOW_CHECK_STAND_IN="injection_similarity",
        SLOW_CHECK_STAND_IN_SECONDS=str(SLEEP),
        SLOW_CHECK_STAND_IN_PID_FILE=str(pid_file(cluster)),
    )
    log = cluster.data_dir / f"worker-{name}.log"
    wait_for(lambda: "ready." in log.read_text(), 60, f"worker {name} to start", log)
    return worker


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def last_check_id(cluster: Cluster) -> int:
    return cluster.query("SELECT coalesce(max(id), 0) AS id FROM governance_slowcheck")[0]["id"]


def started_check(cluster: Cluster, after: int) -> tuple[dict[str, Any], int]:
    """The call's check and the pool child running it, once it is mid-check."""
    child = wait_for(lambda: pids(cluster), 30, "a pool child to start the check")[0]
    (row,) = cluster.query("SELECT * FROM governance_slowcheck WHERE id > %s", (after,))
    assert (row["status"], row["attempts"], row["stage"]) == ("pending", 1, "input")
    return row, child


def check(cluster: Cluster, check_id: int) -> dict[str, Any]:
    (row,) = cluster.query("SELECT * FROM governance_slowcheck WHERE id = %s", (check_id,))
    return row


def sweep(cluster: Cluster) -> int:
    """Run the beat's sweep now; how many rows it re-sent."""
    out = cluster.manage("shell", "-c", SWEEP)
    return int(out.split("swept ")[-1])


def assert_settled(cluster: Cluster) -> None:
    """Nothing left for a sweep to re-send, and the audit chain verifies."""
    out = cluster.manage("shell", "-c", SETTLED)
    assert "swept 0\n" in out, out
    assert "acme: OK" in out, out


def task_runs(log: Path) -> int:
    """How many runs of the check task the worker's log shows finished."""
    return sum(
        "governance.run_slow_check[" in line and " succeeded in " in line
        for line in log.read_text().splitlines()
    )


@contextlib.asynccontextmanager
async def agent(node: Node, token: str) -> AsyncIterator[Client]:
    """The mcp SDK client over WebSocket, patient enough for a call that outlives a worker."""
    transport = websocket_client(node.ws_url, {"Authorization": f"Bearer {token}"})
    async with Client(transport, read_timeout_seconds=CHECK_TIMEOUT + 30) as client:
        yield client


def assert_completed_once(cluster: Cluster, result: Any, row: dict[str, Any]) -> None:
    """The agent got the echo; the check finished on its 2nd attempt, with one verdict
    record and the verdict in the call's outcome."""
    assert not result.is_error, result
    assert TEXT.split(".")[0] in result.content[0].text
    row = check(cluster, row["id"])
    assert (row["status"], row["attempts"], row["verdict"]) == ("done", 2, "flag")
    assert len(pids(cluster)) == 2  # run twice: killed once, completed once
    records = cluster.audit("call_id = %s", (row["call_id"],))
    assert [r["kind"] for r in records] == ["intent", "verdict", "outcome"]
    intent, verdict, outcome = records
    assert (intent["agent_name"], intent["tool"]) == ("alice", TOOL)
    assert verdict["flagged"]
    [entry] = verdict["guardrails"]
    assert (entry["check"], entry["verdict"], entry["attempts"]) == (
        "injection_similarity",
        "flag",
        2,
    )
    assert outcome["outcome"] == "ok"
    # The call waited for that verdict: its outcome carries it.
    [slow] = [v for v in outcome["guardrails"] if v.get("check") == "injection_similarity"]
    assert (slow["stage"], slow["verdict"]) == ("input", "flag")


def assert_broker_drained(broker: redis.Redis) -> None:
    """Nothing left to deliver or to redeliver: the queue and Redis's unacked hash are empty
    (once the worker has acked the last run, just after it logged it)."""
    drained = lambda: broker.llen("celery") == 0 and broker.hlen("unacked") == 0  # noqa: E731
    wait_for(drained, 5, "the broker to drain")


async def test_a_killed_pool_child_is_replaced_and_the_call_gets_its_answer(
    cluster: Cluster, node: Node, broker: redis.Redis, workers: Callable[[str], Any]
):
    worker = await asyncio.to_thread(workers, "one")
    log = cluster.data_dir / "worker-one.log"
    after = await asyncio.to_thread(last_check_id, cluster)
    async with agent(node, cluster.tokens["alice"]) as client:
        call = asyncio.ensure_future(client.call_tool(TOOL, {"text": TEXT}))
        row, child = await asyncio.to_thread(started_check, cluster, after)
        assert children(worker.pid) == [child]  # the pool child, not the worker itself

        os.kill(child, signal.SIGKILL)
        killed_at = time.monotonic()

        result = await asyncio.wait_for(call, ANSWER_WITHIN)
        answered = time.monotonic() - killed_at
    print(f"pool child killed: answered {answered:.1f} s after the kill")
    assert worker.poll() is None  # the worker itself lived on, with a new child
    assert pids(cluster) == [child, *children(worker.pid)]
    assert_completed_once(cluster, result, row)
    assert "WorkerLostError" in log.read_text()
    # The killed run never finished; the redelivery did (logged just after its commit).
    wait_for(lambda: task_runs(log) == 1, 5, "the run's log line", log)
    assert_settled(cluster)  # time enough for a duplicate delivery, were there one
    assert task_runs(log) == 1
    assert_broker_drained(broker)


async def test_a_worker_killed_whole_is_rescued_by_the_sweep_and_its_message_is_harmless(
    cluster: Cluster, node: Node, broker: redis.Redis, workers: Callable[[str], Any]
):
    doomed = await asyncio.to_thread(workers, "doomed")
    after = await asyncio.to_thread(last_check_id, cluster)
    async with agent(node, cluster.tokens["alice"]) as client:
        call = asyncio.ensure_future(client.call_tool(TOOL, {"text": TEXT}))
        row, child = await asyncio.to_thread(started_check, cluster, after)
        assert children(doomed.pid) == [child]

        os.killpg(doomed.pid, signal.SIGKILL)  # the worker and its child at once
        killed_at = time.monotonic()
        doomed.wait(timeout=10)
        await asyncio.to_thread(wait_for, lambda: not alive(child), 10, "the child to die")

        # Redis keeps the dead worker's message as unacked: a new worker does not get it
        # (not before the visibility timeout, an hour)...
        assert broker.hlen("unacked") == 1
        await asyncio.to_thread(workers, "rescuer")
        log = cluster.data_dir / "worker-rescuer.log"
        await asyncio.sleep(1)
        assert (check(cluster, row["id"])["status"], task_runs(log)) == ("pending", 0)
        assert pids(cluster) == [child]
        assert not call.done()

        # ...the sweep re-sends it (beat runs it every SLOW_CHECK_SWEEP_SECONDS).
        assert await asyncio.to_thread(sweep, cluster) == 1
        result = await asyncio.wait_for(call, ANSWER_WITHIN)
        answered = time.monotonic() - killed_at
    print(f"worker killed whole: answered {answered:.1f} s after the kill")
    assert_completed_once(cluster, result, row)
    wait_for(lambda: task_runs(log) == 1, 5, "the run's log line", log)

    # The visibility timeout, brought forward: the dead worker's message comes back, as it
    # would an hour later. The rescuer runs it; the row is done, so nothing is written.
    # Only the dead worker's message is left unacked once the rescuer has acked its own.
    await asyncio.to_thread(wait_for, lambda: broker.hlen("unacked") == 1, 5, "the rescuer's ack")
    with Connection(cluster.redis_url, transport_options={"visibility_timeout": 0}) as conn:
        conn.default_channel.qos.restore_visible(num=100, interval=1)
    await asyncio.to_thread(wait_for, lambda: task_runs(log) == 2, 30, "the redelivery", log)
    assert_completed_once(cluster, result, row)  # still attempt 2, one verdict record
    assert_broker_drained(broker)
    assert_settled(cluster)
