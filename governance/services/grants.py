from __future__ import annotations

from django.db import transaction

from governance.models import Agent, Grant, Tenant
from governance.services.versions import tenant_version_bump


@transaction.atomic
def grant_create(
    *, tenant: Tenant, agent: Agent | None, tool_glob: str, description: str = ""
) -> Grant:
    """Allow ``agent`` (None: every agent of the tenant) the tools matching ``tool_glob``."""
    grant = Grant.objects.create(
        tenant=tenant, agent=agent, tool_glob=tool_glob, description=description
    )
    tenant_version_bump(tenant_id=tenant.id)
    return grant
