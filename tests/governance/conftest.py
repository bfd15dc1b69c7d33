from __future__ import annotations

import pytest

from governance.models import Agent, Tenant
from governance.services.agents import agent_create, tenant_create


@pytest.fixture
def tenant() -> Tenant:
    return tenant_create(slug="acme")


@pytest.fixture
def alice(tenant: Tenant) -> Agent:
    return agent_create(tenant=tenant, name="alice")


def version(tenant: Tenant) -> int:
    """The tenant's persisted governance version, read fresh."""
    return Tenant.objects.get(id=tenant.id).version
