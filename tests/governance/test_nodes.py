"""Gateway nodes by heartbeat, and the recovery of the calls a dead one left unanswered."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from audit.models import AuditRecord
from audit.verify import chain_verify
from governance.models import GatewayNode, Tenant
from governance.services.nodes import (
    INTERRUPTED,
    node_beat,
    node_leave,
    node_start,
    nodes_recover,
)
from governance.tasks import sweep_nodes
from tests.audit.conftest import append, audit_record

pytestmark = pytest.mark.django_db

LEASE = 30.0


@pytest.fixture
def t0() -> datetime:
    return timezone.now() - timedelta(minutes=10)


def at(t0: datetime, seconds: float) -> datetime:
    return t0 + timedelta(seconds=seconds)


def call(tenant: Tenant, when: datetime, *, answered: bool) -> uuid.UUID:
    """A call whose intent was written at ``when``; with its outcome if ``answered``."""
    intent = audit_record(tenant, at=when, request_id="r1")
    records = [intent]
    if answered:
        records.append(
            audit_record(tenant, call_id=intent.call_id, kind="outcome", outcome="ok", at=when)
        )
    append(*records)
    return intent.call_id


def outcomes(call_id: uuid.UUID) -> list[AuditRecord]:
    return list(AuditRecord.objects.filter(call_id=call_id, kind="outcome").order_by("seq"))


def test_a_dead_nodes_unanswered_calls_are_recorded_interrupted_once(tenant, t0):
    dead, live = uuid.uuid4(), uuid.uuid4()
    node_start(id=dead, name="gw-a:8001", now=at(t0, 0))
    node_start(id=live, name="gw-b:8002", now=at(t0, 0))
    answered = call(tenant, at(t0, 1), answered=True)
    left = call(tenant, at(t0, 2), answered=False)
    node_beat(id=dead, name="gw-a:8001", calls_since=at(t0, 2), now=at(t0, 3))
    node_beat(id=live, name="gw-b:8002", calls_since=at(t0, 100), now=at(t0, 100))

    assert nodes_recover(lease_seconds=LEASE, now=at(t0, 20)) == 0  # a-'s lease holds
    assert nodes_recover(lease_seconds=LEASE, now=at(t0, 100)) == 1

    (interrupted,) = outcomes(left)
    intent = AuditRecord.objects.get(call_id=left, kind="intent")
    assert (interrupted.outcome, interrupted.error) == ("interrupted", INTERRUPTED)
    for field in ("tenant_id", "agent_id", "agent_name", "tool", "arguments", "request_id"):
        assert getattr(interrupted, field) == getattr(intent, field)
    assert [o.outcome for o in outcomes(answered)] == ["ok"]
    assert not GatewayNode.objects.filter(id=dead).exists()  # all it left is accounted for
    assert nodes_recover(lease_seconds=LEASE, now=at(t0, 200)) == 0  # never twice
    assert chain_verify(tenant=tenant).ok


def test_recovery_stops_where_a_live_node_may_still_hold_a_call(tenant, t0):
    """A call held on a live node (for a reviewer, say) since before the death: the dead
    node's calls after it cannot be told from the live node's, so they wait their turn."""
    dead, live = uuid.uuid4(), uuid.uuid4()
    node_start(id=dead, name="a", now=at(t0, 0))
    node_start(id=live, name="b", now=at(t0, 0))
    held = call(tenant, at(t0, 1), answered=False)  # b's, still held
    before = call(tenant, at(t0, 0.5), answered=False)  # a's, before b's held call began
    after = call(tenant, at(t0, 2), answered=False)  # a's, after it
    node_beat(id=dead, name="a", calls_since=at(t0, 0.5), now=at(t0, 3))
    node_beat(id=live, name="b", calls_since=at(t0, 1), now=at(t0, 60))

    assert nodes_recover(lease_seconds=LEASE, now=at(t0, 60)) == 1
    assert [o.outcome for o in outcomes(before)] == ["interrupted"]
    assert outcomes(held) == outcomes(after) == []
    node = GatewayNode.objects.get(id=dead)
    assert node.calls_since == at(t0, 1)  # recovered up to there

    answer = audit_record(tenant, call_id=held, kind="outcome", outcome="ok", at=at(t0, 70))
    append(answer)  # b answers its held call
    node_beat(id=live, name="b", calls_since=at(t0, 70), now=at(t0, 70))
    assert nodes_recover(lease_seconds=LEASE, now=at(t0, 70)) == 1
    assert [o.outcome for o in outcomes(after)] == ["interrupted"]
    assert [o.outcome for o in outcomes(held)] == ["ok"]
    assert not GatewayNode.objects.filter(id=dead).exists()


def test_a_process_starting_under_a_nodes_name_recovers_its_former_self_at_once(tenant, t0):
    former, successor = uuid.uuid4(), uuid.uuid4()
    node_start(id=former, name="gw:8000", now=at(t0, 0))
    left = call(tenant, at(t0, 1), answered=False)
    node_beat(id=former, name="gw:8000", calls_since=at(t0, 1), now=at(t0, 1.5))
    node_start(id=successor, name="gw:8000", now=at(t0, 2))  # SIGKILLed, restarted at once
    assert nodes_recover(lease_seconds=LEASE, now=at(t0, 2)) == 1
    assert [o.outcome for o in outcomes(left)] == ["interrupted"]
    assert list(GatewayNode.objects.values_list("id", flat=True)) == [successor]


def test_a_clean_stop_leaves_nothing_to_recover(tenant, t0):
    node = uuid.uuid4()
    node_start(id=node, name="a", now=at(t0, 0))
    call(tenant, at(t0, 1), answered=True)
    node_leave(id=node)
    assert not GatewayNode.objects.exists()
    assert nodes_recover(lease_seconds=LEASE, now=at(t0, 100)) == 0


def test_a_node_found_dead_while_it_stalled_comes_back_on_its_next_beat(tenant, t0):
    node = uuid.uuid4()
    node_start(id=node, name="a", now=at(t0, 0))
    nodes_recover(lease_seconds=LEASE, now=at(t0, 100))
    assert not GatewayNode.objects.exists()  # dead, and nothing of its to recover
    node_beat(id=node, name="a", calls_since=at(t0, 101), now=at(t0, 101))
    live = GatewayNode.objects.get(id=node)
    assert (live.dead_at, live.calls_since) == (None, at(t0, 101))


def test_the_beat_task_recovers(tenant, settings):
    settings.NODE_LEASE_SECONDS = 0.1
    node_start(id=uuid.uuid4(), name="a", now=timezone.now() - timedelta(seconds=5))
    left = call(tenant, timezone.now() - timedelta(seconds=4), answered=False)
    assert sweep_nodes() == 1
    assert [o.outcome for o in outcomes(left)] == ["interrupted"]
