"""Tenants, agents and their API tokens. Each write is recorded in the tenant's audit chain
as ``actor``'s act (``governance.services.changes``)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from governance.models import Agent, AgentToken, Tenant
from governance.services.changes import SYSTEM, change_record, object_snapshot
from governance.services.guardrails import guardrail_defaults_create
from governance.services.versions import tenant_version_bump

TOKEN_PREFIX = "wa_"  # noqa: S105 - a prefix, not a secret


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    token: str  # the secret itself: shown once, never stored
    record: AgentToken


@transaction.atomic
def tenant_create(*, slug: str, name: str = "", actor: str = SYSTEM) -> Tenant:
    """A new tenant, with the default guardrails on."""
    tenant = Tenant.objects.create(slug=slug, name=name or slug)
    change_record(actor=actor, action="created", obj=tenant, before=None)
    guardrail_defaults_create(tenant=tenant, actor=actor)
    return tenant


@transaction.atomic
def agent_create(
    *,
    tenant: Tenant,
    name: str,
    description: str = "",
    owner: AbstractBaseUser | None = None,
    actor: str = SYSTEM,
) -> Agent:
    """A new agent; ``owner`` is the person responsible for it (under four eyes, not its
    approver)."""
    agent = Agent.objects.create(tenant=tenant, name=name, description=description, owner=owner)
    tenant_version_bump(tenant_id=tenant.id)
    change_record(actor=actor, action="created", obj=agent, before=None)
    return agent


@transaction.atomic
def token_issue(
    *, agent: Agent, expires_at: datetime | None = None, actor: str = SYSTEM
) -> IssuedToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = AgentToken.objects.create(
        agent=agent, prefix=token[:10], digest=token_digest(token), expires_at=expires_at
    )
    tenant_version_bump(tenant_id=agent.tenant_id)
    change_record(actor=actor, action="issued", obj=record, before=None)
    return IssuedToken(token=token, record=record)


@transaction.atomic
def token_revoke(*, token: AgentToken, actor: str = SYSTEM) -> AgentToken:
    """Revoke a token; its live connections close within GOVERNANCE_POLL_SECONDS."""
    if token.revoked_at is None:
        before = object_snapshot(token)
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        tenant_version_bump(tenant_id=token.agent.tenant_id)
        change_record(actor=actor, action="revoked", obj=token, before=before)
    return token
