"""What a refused agent is told follows its tenant's denial_detail; the audit record keeps the
whole decision either way."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

from audit.models import AuditRecord
from governance.models import Tenant
from governance.services.agents import agent_create, tenant_create, token_issue
from governance.services.policy import rule_create
from governance.services.toolservers import tool_catalog_sync, toolserver_add
from orchestrator.gateway import PERMISSION_DENIED, CallError, CallMeta, Gateway

pytestmark = pytest.mark.django_db(transaction=True)

META = CallMeta(transport="ws", protocol_version="2025-11-25", request_id="1")
DELETE_ALL = {"path": "/", "recursive": True}


def setup(detail: str) -> tuple[str, int, int]:
    tenant = tenant_create(slug="acme")
    Tenant.objects.filter(id=tenant.id).update(denial_detail=detail)
    agent = agent_create(tenant=tenant, name="alice")
    server = toolserver_add(tenant=tenant, name="files", command="never-started")
    schema = {"type": "object"}
    tool_catalog_sync(
        server_id=server.id,
        tools=[
            {"name": "delete", "description": "", "inputSchema": schema},
            {"name": "archive", "description": "", "inputSchema": schema},
        ],
    )
    rule_create(tenant=tenant, effect="allow", resource="files__*")
    deny = rule_create(
        tenant=tenant,
        effect="deny",
        resource="files__delete",
        conditions=[{"path": "$.recursive", "op": "equals", "value": True}],
        description="no recursive deletes",
    )
    approval = rule_create(
        tenant=tenant, effect="require_approval", resource="files__archive", description="ask"
    )
    return token_issue(agent=agent).token, deny.id, approval.id


async def refusal(detail: str, tool: str) -> tuple[CallError, int, int]:
    token, deny_id, approval_id = await sync_to_async(setup)(detail)
    gateway = Gateway()
    await gateway.start()
    try:
        ctx = gateway.authenticate(token)
        with pytest.raises(CallError) as refused:
            await gateway.call_tool(ctx, META, name=tool, arguments=DELETE_ALL)
    finally:
        await gateway.close()
    return refused.value, deny_id, approval_id


async def test_minimal_detail_says_only_permission_denied():
    error, deny_id, _ = await refusal("minimal", "files__delete")
    assert (error.code, error.message, error.data) == (
        PERMISSION_DENIED,
        "permission denied",
        {"tool": "files__delete"},
    )
    record = await AuditRecord.objects.aget(kind="outcome")
    assert (record.decision, record.rule_id, record.outcome) == ("deny", deny_id, "denied")
    assert record.reason == f"denied by rule {deny_id} (no recursive deletes)"


async def test_rule_detail_names_the_rule_and_its_description():
    error, deny_id, _ = await refusal("rule", "files__delete")
    assert error.message == f"permission denied: denied by rule {deny_id} (no recursive deletes)"
    assert error.data["rule"] == deny_id
    assert "explanation" not in error.data


async def test_full_detail_explains_each_condition():
    error, deny_id, _ = await refusal("full", "files__delete")
    assert error.data["rule"] == deny_id
    assert "    $.recursive equals true: true → holds" in error.data["explanation"]


async def started_gateway_denying_after_the_intent(deny: dict) -> tuple[Gateway, str]:
    """A gateway whose audit writer, once an intent is durable, commits a rule ``deny`` and
    lets the gateway apply it: a policy change landing while a call waits on its intent."""
    token, _, _ = await sync_to_async(setup)("rule")
    gateway = Gateway()
    await gateway.start()
    write = gateway.audit.write

    async def write_then_change(record: AuditRecord) -> None:
        await write(record)
        if record.kind == "intent":
            tenant = await Tenant.objects.aget(slug="acme")
            await sync_to_async(rule_create)(tenant=tenant, **deny)
            await gateway.refresh()

    gateway.audit.write = write_then_change
    return gateway, token


async def test_a_call_refused_by_a_rule_applied_while_it_waited_never_goes_upstream():
    # files__read is allowed when decided; its upstream ("never-started") would answer
    # "upstream down" if the call went on.
    gateway, token = await started_gateway_denying_after_the_intent(
        {"effect": "deny", "resource": "files__*", "description": "freeze"}
    )
    try:
        ctx = gateway.authenticate(token)
        with pytest.raises(CallError) as refused:
            await gateway.call_tool(ctx, META, name="files__delete", arguments={"path": "/a"})
    finally:
        await gateway.close()
    error = refused.value
    assert error.code == PERMISSION_DENIED
    assert error.message.startswith("permission denied: denied by rule")
    intent = await AuditRecord.objects.aget(kind="intent")
    outcome = await AuditRecord.objects.aget(kind="outcome")
    assert (intent.decision, outcome.outcome) == ("allow", "denied")
    assert outcome.error.startswith("policy changed while the call waited: denied by rule")


async def test_a_looser_rule_applied_while_a_call_waited_changes_nothing():
    # An unrelated allow rule moves the version; the call goes on to its upstream, which is
    # down: the answer is the upstream's, not a denial.
    gateway, token = await started_gateway_denying_after_the_intent(
        {"effect": "allow", "resource": "other__*"}
    )
    try:
        ctx = gateway.authenticate(token)
        with pytest.raises(CallError) as failed:
            await gateway.call_tool(ctx, META, name="files__delete", arguments={"path": "/a"})
    finally:
        await gateway.close()
    assert failed.value.code != PERMISSION_DENIED
    outcome = await AuditRecord.objects.aget(kind="outcome")
    assert outcome.outcome != "denied"
