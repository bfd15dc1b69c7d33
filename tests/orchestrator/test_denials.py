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
