"""Tenants, agents and their API tokens."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from governance.models import Agent, AgentToken, Tenant
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
def tenant_create(*, slug: str, name: str = "") -> Tenant:
    """A new tenant, with the default guardrails on."""
    tenant = Tenant.objects.create(slug=slug, name=name or slug)
    guardrail_defaults_create(tenant=tenant)
    return tenant


@transaction.atomic
def agent_create(*, tenant: Tenant, name: str, description: str = "") -> Agent:
    agent = Agent.objects.create(tenant=tenant, name=name, description=description)
    tenant_version_bump(tenant_id=tenant.id)
    return agent


@transaction.atomic
def token_issue(*, agent: Agent, expires_at: datetime | None = None) -> IssuedToken:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = AgentToken.objects.create(
        agent=agent, prefix=token[:10], digest=token_digest(token), expires_at=expires_at
    )
    tenant_version_bump(tenant_id=agent.tenant_id)
    return IssuedToken(token=token, record=record)


@transaction.atomic
def token_revoke(*, token: AgentToken) -> AgentToken:
    """Revoke a token; its live connections close within GOVERNANCE_POLL_SECONDS."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        tenant_version_bump(tenant_id=token.agent.tenant_id)
    return token
