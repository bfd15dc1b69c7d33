"""Calls held for approval, in one gateway (and a second one standing in for a restart), with
the real mcp-server-time upstream: the request is bound to the exact call; approve, deny,
expiry, cancel, four eyes, single use, restart and shutdown; each step in the chain."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db.models import F
from django.utils import timezone

from audit.models import AuditRecord
from audit.verify import chain_verify
from governance.models import ApprovalRequest, Tenant
from governance.services.agents import agent_create, tenant_create, token_issue
from governance.services.approvals import (
    ApprovalClosed,
    DigestMismatch,
    FourEyesViolation,
    approval_decide,
    approval_release,
    approvals_interrupt,
    arguments_digest,
)
from governance.services.policy import rule_create
from governance.services.toolservers import toolserver_add
from governance.tasks import sweep_approvals
from orchestrator.gateway import APPROVAL_REQUIRED, CallError, CallMeta, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

TOKYO_NOON = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
META = CallMeta(transport="ws", protocol_version="2025-11-25", request_id="7")


@dataclass
class Setup:
    token: str
    tenant_id: int
    rule_id: int


def setup() -> Setup:
    users = get_user_model()
    olga = users.objects.create_user("olga")  # responsible for alice
    users.objects.create_user("rita")
    tenant = tenant_create(slug="acme")
    agent = agent_create(tenant=tenant, name="alice", owner=olga)
    toolserver_add(
        tenant=tenant, name="time", command=sys.executable, args=["-m", "mcp_server_time"]
    )
    rule_create(tenant=tenant, effect="allow", resource="time__get_current_time")
    rule = rule_create(
        tenant=tenant,
        effect="require_approval",
        resource="time__convert_time",
        description="conversions need a human",
    )
    return Setup(token_issue(agent=agent).token, tenant.id, rule.id)


@pytest.fixture
async def acme(settings) -> Any:
    settings.APPROVAL_PROGRESS_SECONDS = 0.2
    made = await sync_to_async(setup)()
    gateway = Gateway()
    await gateway.start()
    async with asyncio.timeout(30):  # the upstream connects and lists its tools
        while "time__convert_time" not in gateway._states[made.tenant_id].tools:
            await asyncio.sleep(0.05)
    yield gateway, made
    await gateway.close()


async def pending(call: asyncio.Task[Any], count: int = 1) -> list[ApprovalRequest]:
    """Wait until ``count`` requests are pending (the call is held), newest last."""
    async with asyncio.timeout(10):
        while True:
            assert not call.done(), call
            found = [a async for a in ApprovalRequest.objects.filter(status="pending")]
            if len(found) >= count:
                return sorted(found, key=lambda a: a.created_at)
            await asyncio.sleep(0.02)


@sync_to_async
def decide(approval: ApprovalRequest, who: str, approve: bool, comment: str = "", **kw: Any):
    user = get_user_model().objects.get(username=who)
    return approval_decide(approval=approval, user=user, approve=approve, comment=comment, **kw)


@sync_to_async
def story(call_id: Any) -> list[tuple[str, str, str]]:
    """(kind, actor, status change or outcome) of each record of the call, in chain order."""
    rows = AuditRecord.objects.filter(call_id=call_id).order_by("seq")
    return [
        (r.kind, r.actor, "→".join(str(s) for s in r.diff["status"]) if r.diff else r.outcome)
        for r in rows
    ]


@sync_to_async
def chain_ok() -> bool:
    return chain_verify(tenant=Tenant.objects.get(slug="acme")).ok


async def abandon(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def call(gateway: Gateway, token: str, name: str = "time__convert_time", **kw: Any):
    ctx = gateway.authenticate(token)
    arguments = kw.pop("arguments", TOKYO_NOON)
    meta = kw.pop("meta", META)
    return asyncio.ensure_future(gateway.call_tool(ctx, meta, name=name, arguments=arguments))


async def test_a_held_call_is_bound_to_its_tenant_agent_tool_arguments_and_policy(acme):
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    state = gateway._states[made.tenant_id]
    assert approval.tenant_id == made.tenant_id
    assert approval.agent_name == "alice"
    assert approval.tool == "time__convert_time"
    assert approval.arguments == TOKYO_NOON
    assert approval.arguments_digest == arguments_digest(TOKYO_NOON)
    assert approval.policy_version == state.version
    assert approval.rule_id == made.rule_id
    assert approval.reason == f"approval required by rule {made.rule_id} (conversions need a human)"
    assert approval.expires_at - approval.created_at == timedelta(seconds=900)
    assert approval.node == gateway.approvals.node
    # The intent is durable before the request; the request has its own record.
    assert await story(approval.call_id) == [
        ("intent", "", ""),
        ("approval", "alice", "None→pending"),
    ]
    await abandon(task)


async def test_an_approved_call_runs_once_and_its_story_names_the_reviewer(acme):
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    await decide(approval, "rita", True, "fine for a demo")
    result = await asyncio.wait_for(task, 30)
    assert not result.get("isError")
    assert result["structuredContent"]["target"]["timezone"] == "Asia/Tokyo"
    assert result["structuredContent"]["target"]["datetime"].startswith(
        result["structuredContent"]["source"]["datetime"][:10]
    )
    assert await story(approval.call_id) == [
        ("intent", "", ""),
        ("approval", "alice", "None→pending"),
        ("approval", "rita", "pending→approved"),
        ("outcome", "", "ok"),
    ]
    outcome = await AuditRecord.objects.aget(call_id=approval.call_id, kind="outcome")
    assert outcome.decision == "require_approval"
    assert f"approved by rita: fine for a demo (approval {approval.pk})" in outcome.reason
    used = await ApprovalRequest.objects.aget(pk=approval.pk)
    assert used.released_at is not None
    # One approval is one call: it cannot be used again, even for the same arguments.
    with pytest.raises(ApprovalClosed, match="already used"):
        await sync_to_async(approval_release)(
            approval_id=approval.pk, digest=approval.arguments_digest
        )
    # And the same call made again is held again, on a request of its own.
    again = call(gateway, made.token)
    (second,) = await pending(again)
    assert second.pk != approval.pk
    await abandon(again)
    assert await chain_ok()


async def test_a_denied_call_gets_the_reviewers_words_and_nothing_is_called(acme):
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    await decide(approval, "rita", False, "not during the freeze")
    with pytest.raises(CallError) as denied:
        await asyncio.wait_for(task, 10)
    assert denied.value.code == APPROVAL_REQUIRED
    assert denied.value.message == "approval denied by rita: not during the freeze"
    assert denied.value.data == {
        "tool": "time__convert_time",
        "approval": str(approval.pk),
        "status": "denied",
        "reviewer": "rita",
        "comment": "not during the freeze",
    }
    assert await story(approval.call_id) == [
        ("intent", "", ""),
        ("approval", "alice", "None→pending"),
        ("approval", "rita", "pending→denied"),
        ("outcome", "", "denied"),
    ]
    outcome = await AuditRecord.objects.aget(call_id=approval.call_id, kind="outcome")
    assert outcome.result_digest == ""  # no upstream result exists
    assert outcome.error == "approval denied by rita: not during the freeze"


async def test_nobody_deciding_in_time_denies_it(acme):
    gateway, made = acme
    await Tenant.objects.filter(id=made.tenant_id).aupdate(
        approval_timeout_seconds=1, version=F("version") + 1
    )
    await gateway.refresh()
    with pytest.raises(CallError) as expired:
        await asyncio.wait_for(call(gateway, made.token), 10)
    assert expired.value.message == "approval expired: no reviewer decided within 1 s"
    approval = await ApprovalRequest.objects.aget()
    assert (approval.status, approval.decided_by_name) == ("expired", "gateway")
    # Too late to decide now.
    with pytest.raises(ApprovalClosed, match="expired"):
        await decide(approval, "rita", True)
    assert (await story(approval.call_id))[-2:] == [
        ("approval", "gateway", "pending→expired"),
        ("outcome", "", "denied"),
    ]


async def test_a_call_cancelled_while_it_waits_cancels_its_request(acme):
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    approval = await ApprovalRequest.objects.aget(pk=approval.pk)
    assert approval.status == "cancelled"
    with pytest.raises(ApprovalClosed, match="cancelled"):
        await decide(approval, "rita", True)
    assert (await story(approval.call_id))[-2:] == [
        ("approval", "gateway", "pending→cancelled"),
        ("outcome", "", "cancelled"),
    ]


async def test_four_eyes_the_person_responsible_for_the_agent_cannot_approve(acme):
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    with pytest.raises(FourEyesViolation, match="another reviewer must approve"):
        await decide(approval, "olga", True)
    assert (await ApprovalRequest.objects.aget(pk=approval.pk)).status == "pending"
    await decide(approval, "rita", True)
    assert not (await asyncio.wait_for(task, 30)).get("isError")
    # Denying one's own agent's request is always allowed; without four eyes, so is approving.
    await Tenant.objects.filter(id=made.tenant_id).aupdate(four_eyes=False)  # read per decision
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    await decide(approval, "olga", True)
    assert not (await asyncio.wait_for(task, 30)).get("isError")


async def test_a_decision_is_bound_to_the_arguments_digest(acme):
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    other = arguments_digest({**TOKYO_NOON, "target_timezone": "Europe/Paris"})
    with pytest.raises(DigestMismatch):
        await decide(approval, "rita", True, digest=other)
    await decide(approval, "rita", True, digest=approval.arguments_digest)
    assert not (await asyncio.wait_for(task, 30)).get("isError")


async def test_an_approval_for_other_arguments_does_not_release_the_call(acme):
    """Were a stored request altered to name other arguments, its approval would not
    release this call: the gateway recomputes the digest of what it would send."""
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    forged = arguments_digest({**TOKYO_NOON, "time": "13:00"})
    await ApprovalRequest.objects.filter(pk=approval.pk).aupdate(arguments_digest=forged)
    await decide(approval, "rita", True)
    with pytest.raises(CallError) as refused:
        await asyncio.wait_for(task, 10)
    assert refused.value.message == (
        "approval refused: the approval was given for other arguments than this call's"
    )
    assert (await story(approval.call_id))[-1] == ("outcome", "", "denied")


async def test_progress_is_told_while_the_call_waits(acme):
    gateway, made = acme
    told: list[tuple[float, float | None, str]] = []

    async def progress(done: float, total: float | None, message: str) -> None:
        told.append((done, total, message))

    meta = CallMeta(
        transport="ws",
        protocol_version="2025-11-25",
        request_id="8",
        progress=progress,
    )
    task = call(gateway, made.token, meta=meta)
    (approval,) = await pending(task)
    async with asyncio.timeout(5):
        while len(told) < 3:
            await asyncio.sleep(0.05)
    await decide(approval, "rita", False)
    with pytest.raises(CallError):
        await task
    done = [d for d, _, _ in told]
    assert done == sorted(done)  # it only goes up
    assert len(set(done)) == len(done)
    assert all(total == 900 for _, total, _ in told)
    assert f"approval {approval.pk}" in told[0][2]


async def test_a_gateway_restarted_under_the_same_name_resolves_what_it_left(acme, settings):
    """The first gateway stands in for a process that died with a call held: the second,
    started under its node name, resolves the request, and the call (still waiting here,
    so we can see it) is told clearly."""
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    settings.GATEWAY_NODE = gateway.approvals.node
    successor = Gateway()
    await successor.start()
    await successor.close()
    with pytest.raises(CallError) as interrupted:
        await asyncio.wait_for(task, 10)
    assert interrupted.value.message == (
        "approval interrupted: the gateway restarted while this call waited for approval; "
        "nothing was called; call again"
    )
    approval = await ApprovalRequest.objects.aget(pk=approval.pk)
    assert (approval.status, approval.decided_by_name) == ("interrupted", "gateway")
    # The successor records the call interrupted, then its request; the last record is the
    # stand-in's own answer, which a process that really died cannot write.
    assert (await story(approval.call_id))[-3:] == [
        ("outcome", "", "interrupted"),
        ("approval", "gateway", "pending→interrupted"),
        ("outcome", "", "denied"),
    ]


async def test_a_gateway_shutting_down_answers_its_held_calls(acme):
    gateway, made = acme
    task = call(gateway, made.token)
    await pending(task)
    await gateway.approvals.stop()
    with pytest.raises(CallError) as interrupted:
        await asyncio.wait_for(task, 5)
    assert interrupted.value.message.startswith("approval interrupted: the gateway stopped")


async def test_the_sweep_resolves_requests_whose_gateway_never_came_back(acme):
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    assert await sync_to_async(sweep_approvals)() == 0  # its lease is fresh
    gone = timezone.now() + timedelta(minutes=5)
    closed = await sync_to_async(approvals_interrupt)(now=gone)
    assert [a.pk for a in closed] == [approval.pk]
    with pytest.raises(CallError, match="approval interrupted"):
        await asyncio.wait_for(task, 5)


async def test_the_holder_renews_its_lease(acme, settings):
    settings.APPROVAL_LEASE_SECONDS = 1.5
    gateway, made = acme
    task = call(gateway, made.token)
    (approval,) = await pending(task)
    first = approval.lease_until
    await asyncio.sleep(1.0)
    renewed = await ApprovalRequest.objects.aget(pk=approval.pk)
    assert renewed.lease_until > first
    await abandon(task)
