"""Two tenants with the same kinds of data under distinct names, made through the real
services, and their members. Tenant isolation tests look for B's names on A's pages."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client
from django.utils import timezone

from governance.models import Agent, Alert, ApprovalRequest, Tenant, Tool, ToolServer
from governance.services.agents import IssuedToken, agent_create, tenant_create, token_issue
from governance.services.approvals import approval_request_create
from governance.services.members import membership_set
from governance.services.toolservers import tool_catalog_sync, toolserver_add
from tests.audit.conftest import append, audit_record

PASSWORD = "dashboard-pw"


@pytest.fixture(autouse=True)
def fast_passwords(settings: Any) -> None:
    """PBKDF2 at full strength costs half a second per password; these are test logins."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def call(
    tenant: Tenant,
    agent: Agent,
    tool: str,
    *,
    decision: str = "allow",
    outcome: str = "ok",
    latency_us: int | None = 1500,
    flagged: bool = False,
    guardrails: list[dict[str, Any]] | None = None,
    arguments: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> uuid.UUID:
    """One governed call as the gateway records it: an intent and an outcome."""
    call_id = uuid.uuid4()
    common: dict[str, Any] = {
        "call_id": call_id,
        "agent_name": agent.name,
        "agent_id": agent.id,
        "tool": tool,
        "decision": decision,
        "flagged": flagged,
        "guardrails": guardrails or [],
        "arguments": arguments if arguments is not None else {"path": "/srv/repo"},
    }
    at = at or timezone.now()
    append(
        audit_record(
            tenant, kind="intent", at=at - timedelta(microseconds=latency_us or 0), **common
        ),
        audit_record(
            tenant, kind="outcome", outcome=outcome, latency_us=latency_us, at=at, **common
        ),
    )
    return call_id


def hold(
    tenant: Tenant,
    agent: Agent,
    tool: str,
    *,
    arguments: dict[str, Any] | None = None,
    timeout_seconds: float = 600,
) -> ApprovalRequest:
    """A call held for approval: its intent, then the request (with its ``requested`` record)."""
    arguments = arguments if arguments is not None else {"branch": "main", "force": True}
    call_id = uuid.uuid4()
    append(
        audit_record(
            tenant,
            kind="intent",
            call_id=call_id,
            agent_name=agent.name,
            agent_id=agent.id,
            tool=tool,
            decision="require_approval",
            arguments=arguments,
        )
    )
    return approval_request_create(
        tenant_id=tenant.id,
        agent_id=agent.id,
        agent_name=agent.name,
        call_id=call_id,
        tool=tool,
        arguments=arguments,
        recorded_arguments=arguments,
        rule_id=None,
        reason="pushing needs a human",
        policy_version=tenant.version,
        node="test-node",
        timeout_seconds=timeout_seconds,
        lease_seconds=60,
    )


def member(django_user_model: Any, tenant: Tenant, username: str, role: str) -> AbstractBaseUser:
    user = django_user_model.objects.create_user(username=username, password=PASSWORD)
    membership_set(tenant=tenant, user=user, role=role)
    return user


def login(user: AbstractBaseUser, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@dataclass
class World:
    """One tenant's data; every name starts with ``prefix`` so another page can look for it."""

    prefix: str
    tenant: Tenant
    agent: Agent
    token: IssuedToken
    ok_call: uuid.UUID
    denied_call: uuid.UUID
    blocked_call: uuid.UUID
    approval: ApprovalRequest
    server: ToolServer
    quarantined: Tool
    alert: Alert

    @property
    def slug(self) -> str:
        return self.tenant.slug

    @property
    def tool(self) -> str:
        return f"{self.prefix}srv__status"

    def markers(self) -> list[str]:
        """Strings that only this tenant's data contains."""
        return [
            self.prefix,
            self.agent.name,
            self.tool,
            str(self.ok_call),
            str(self.denied_call),
            str(self.blocked_call),
            str(self.approval.id),
            self.token.record.prefix,
            self.alert.title,
        ]


PII_VERDICT = {
    "check": "pii",
    "stage": "input",
    "action": "block",
    "verdict": "block",
    "findings": [{"kind": "email", "path": "$.to"}],
}


def world(prefix: str) -> World:
    tenant = tenant_create(slug=prefix, name=f"{prefix.capitalize()} Corp")
    agent = agent_create(tenant=tenant, name=f"{prefix}-agent")
    token = token_issue(agent=agent)
    tool = f"{prefix}srv__status"
    ok_call = call(tenant, agent, tool, latency_us=2000)
    denied_call = call(tenant, agent, f"{prefix}srv__delete", decision="deny", outcome="denied")
    blocked_call = call(
        tenant,
        agent,
        f"{prefix}srv__mail",
        outcome="blocked",
        flagged=True,
        guardrails=[PII_VERDICT],
        latency_us=None,
    )
    approval = hold(tenant, agent, f"{prefix}srv__push")
    server = toolserver_add(tenant=tenant, name=f"{prefix}srv", command="true")
    listing = {"name": "status", "description": "Show status.", "inputSchema": {"type": "object"}}
    tool_catalog_sync(server_id=server.id, tools=[listing])
    tool_catalog_sync(
        server_id=server.id,
        tools=[{**listing, "description": f"Show status ({prefix} changed it)."}],
    )
    quarantined = Tool.objects.get(server=server, name="status")
    alert = Alert.objects.get(tenant=tenant, tool=quarantined)
    return World(
        prefix=prefix,
        tenant=tenant,
        agent=agent,
        token=token,
        ok_call=ok_call,
        denied_call=denied_call,
        blocked_call=blocked_call,
        approval=approval,
        server=server,
        quarantined=quarantined,
        alert=alert,
    )


@pytest.fixture
def a() -> World:
    return world("acme")


@pytest.fixture
def b() -> World:
    return world("globex")


@pytest.fixture
def reviewer(django_user_model: Any, a: World) -> AbstractBaseUser:
    """A reviewer of tenant A."""
    return member(django_user_model, a.tenant, "rita", "reviewer")


@pytest.fixture
def admin(django_user_model: Any, a: World) -> AbstractBaseUser:
    """An admin of tenant A."""
    return member(django_user_model, a.tenant, "adam", "admin")


@pytest.fixture
def outsider(django_user_model: Any, b: World) -> AbstractBaseUser:
    """An admin of tenant B: a member of a tenant, just not of A."""
    return member(django_user_model, b.tenant, "oscar", "admin")
