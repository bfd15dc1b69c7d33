from __future__ import annotations

import pytest

from governance.models import Agent, Tenant
from governance.services.agents import agent_create, tenant_create, token_issue
from governance.services.policy import rule_create
from governance.services.toolservers import tool_catalog_sync, toolserver_add

# A 2026-07-28 request's envelope, and the key naming a listen stream on its messages.
MODERN = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
}
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"


def tool(name: str) -> dict:
    """A catalog entry as an upstream lists it."""
    return {"name": name, "description": name, "inputSchema": {"type": "object"}}


def allow(agent_name: str, tool_glob: str) -> None:
    """Allow an agent of tenant acme the tools matching ``tool_glob``."""
    tenant = Tenant.objects.get(slug="acme")
    agent = Agent.objects.get(tenant=tenant, name=agent_name)
    rule_create(tenant=tenant, agent=agent, effect="allow", resource=tool_glob)


@pytest.fixture
def alice_token() -> str:
    """Tenant acme: alice (allowed files__read) and bob (nothing); files lists read, write."""
    tenant = tenant_create(slug="acme")
    alice = agent_create(tenant=tenant, name="alice")
    agent_create(tenant=tenant, name="bob")
    server = toolserver_add(tenant=tenant, name="files", command="never-started")
    tool_catalog_sync(server_id=server.id, tools=[tool("read"), tool("write")])
    allow("alice", "files__read")
    return token_issue(agent=alice).token
