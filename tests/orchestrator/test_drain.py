"""A gateway draining before a restart, and its heartbeat: in one process, with the real
testkit upstream (its ``sleep`` tool keeps a call in flight)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from audit.models import AuditRecord
from governance.models import GatewayNode
from governance.services.agents import agent_create, tenant_create, token_issue
from governance.services.policy import rule_create
from governance.services.toolservers import toolserver_add
from orchestrator.gateway import (
    CALL_INTERRUPTED,
    DRAINING,
    GATEWAY_DRAINING,
    INTERRUPTED,
    CallError,
    CallMeta,
    Gateway,
)
from tests.e2e.conftest import TESTKIT

pytestmark = pytest.mark.django_db(transaction=True)

META = CallMeta(transport="ws", protocol_version="2025-11-25", request_id="1")


def setup() -> tuple[str, int]:
    tenant = tenant_create(slug="acme")
    agent = agent_create(tenant=tenant, name="alice")
    toolserver_add(tenant=tenant, name="testkit", command=sys.executable, args=[str(TESTKIT)])
    rule_create(tenant=tenant, effect="allow", resource="testkit__*")
    return token_issue(agent=agent).token, tenant.id


@pytest.fixture
async def gateway(settings) -> Any:
    settings.NODE_HEARTBEAT_SECONDS = 0.05
    token, tenant_id = await sync_to_async(setup)()
    gateway = Gateway()
    await gateway.start()
    async with asyncio.timeout(30):  # the upstream connects and lists its tools
        while "testkit__sleep" not in gateway._states[tenant_id].tools:
            await asyncio.sleep(0.05)
    gateway.ctx = gateway.authenticate(token)
    yield gateway
    await gateway.close()


def sleep(gateway: Any, seconds: float) -> asyncio.Task[dict[str, Any]]:
    return asyncio.ensure_future(
        gateway.call_tool(gateway.ctx, META, name="testkit__sleep", arguments={"seconds": seconds})
    )


async def outcomes() -> list[str]:
    return [r.outcome async for r in AuditRecord.objects.filter(kind="outcome").order_by("seq")]


async def test_a_drain_lets_calls_in_flight_finish_and_refuses_new_ones(gateway):
    running = sleep(gateway, 0.5)
    await asyncio.sleep(0.2)  # it is upstream now
    draining = asyncio.ensure_future(gateway.drain(seconds=10))
    await asyncio.sleep(0)
    with pytest.raises(CallError) as refused:
        await sleep(gateway, 0)
    assert (refused.value.code, refused.value.message) == (GATEWAY_DRAINING, DRAINING)
    assert not running.done()
    await asyncio.wait_for(draining, 5)
    assert running.done()
    assert (await running)["content"][0]["text"] == "slept 0.5"
    # The refused call was never recorded: nothing of it happened.
    assert await outcomes() == ["ok"]


async def test_a_drain_interrupts_what_outlasts_it(gateway):
    running = sleep(gateway, 30)
    await asyncio.sleep(0.2)
    await asyncio.wait_for(gateway.drain(seconds=0.3), 5)
    with pytest.raises(CallError) as interrupted:
        await running  # answered: its connection closes next, as if all were answered
    assert (interrupted.value.code, interrupted.value.message) == (CALL_INTERRUPTED, INTERRUPTED)
    (record,) = [r async for r in AuditRecord.objects.filter(kind="outcome")]
    assert (record.outcome, record.error) == ("interrupted", INTERRUPTED)


async def test_the_heartbeat_reports_the_oldest_call_in_flight(gateway):
    running = sleep(gateway, 1)
    await asyncio.sleep(0.1)
    (started,) = [started for started, _ in gateway._calls.values()]

    async def beat() -> GatewayNode:
        async with asyncio.timeout(5):
            while True:
                node = await GatewayNode.objects.aget(id=gateway.boot)
                if node.calls_since == started:
                    return node
                await asyncio.sleep(0.05)

    node = await beat()
    assert (node.name, node.dead_at) == (gateway.node, None)
    await running
    async with asyncio.timeout(5):  # idle: it vouches for every call up to its latest beat
        while (await GatewayNode.objects.aget(id=gateway.boot)).calls_since == started:
            await asyncio.sleep(0.05)


async def test_a_clean_close_leaves_no_node_behind(settings):
    gateway = Gateway()
    await gateway.start()
    assert await GatewayNode.objects.filter(id=gateway.boot).aexists()
    await gateway.close()
    assert not await GatewayNode.objects.filter(id=gateway.boot).aexists()
