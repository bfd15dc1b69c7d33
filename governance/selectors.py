"""Reads: the governance snapshot a gateway process keeps in memory."""

from __future__ import annotations

from governance.engine.types import (
    AgentEntry,
    GrantRule,
    ServerSpec,
    TenantState,
    TokenEntry,
    ToolEntry,
    exposed_tool_name,
)
from governance.models import Agent, AgentToken, Grant, Tenant, Tool, ToolServer


def tenant_versions() -> dict[int, int]:
    """One cheap query every gateway process polls: tenant id → governance version."""
    return dict(Tenant.objects.values_list("id", "version"))


def tenant_state_get(*, tenant_id: int) -> TenantState:
    tenant = Tenant.objects.get(id=tenant_id)
    agents = {
        a.id: AgentEntry(id=a.id, name=a.name, is_active=a.is_active)
        for a in Agent.objects.filter(tenant_id=tenant_id)
    }
    tokens = {
        t.digest: TokenEntry(
            id=t.id,
            tenant_id=tenant_id,
            agent_id=t.agent_id,
            expires_at=t.expires_at,
            revoked=t.revoked_at is not None,
        )
        for t in AgentToken.objects.filter(agent__tenant_id=tenant_id)
    }
    servers = {
        s.id: ServerSpec(
            id=s.id,
            tenant_id=tenant_id,
            name=s.name,
            transport=s.transport,
            command=s.command,
            args=tuple(str(a) for a in s.args),
            env=tuple(sorted((str(k), str(v)) for k, v in s.env.items())),
            url=s.url,
            headers=tuple(sorted((str(k), str(v)) for k, v in s.headers.items())),
        )
        for s in ToolServer.objects.filter(tenant_id=tenant_id, enabled=True)
    }
    tools: dict[str, ToolEntry] = {}
    catalog = Tool.objects.filter(server_id__in=servers).order_by("server__name", "name")
    for tool in catalog:
        server = servers[tool.server_id]
        exposed = exposed_tool_name(server.name, tool.name)
        # setdefault: two upstream names that sanitise alike keep the first, deterministically.
        tools.setdefault(
            exposed,
            ToolEntry(
                server_id=server.id,
                server_name=server.name,
                name=tool.name,
                exposed_name=exposed,
                title=tool.title,
                description=tool.description,
                input_schema=tool.input_schema,
                output_schema=tool.output_schema,
                annotations=tool.annotations,
            ),
        )
    grants = tuple(
        GrantRule(id=g.id, agent_id=g.agent_id, tool_glob=g.tool_glob)
        for g in Grant.objects.filter(tenant_id=tenant_id).order_by("id")
    )
    return TenantState(
        id=tenant.id,
        slug=tenant.slug,
        version=tenant.version,
        agents=agents,
        tokens=tokens,
        servers=servers,
        tools=dict(sorted(tools.items())),
        grants=grants,
    )
