"""Reads: the governance snapshot a gateway process keeps in memory."""

from __future__ import annotations

import time
from typing import Any

from governance.engine.conditions import ConditionError, conditions_parse
from governance.engine.policy import (
    EFFECTS,
    Effect,
    Explanation,
    PolicyError,
    RuleSpec,
    TenantPolicy,
)
from governance.engine.types import (
    AgentEntry,
    ServerSpec,
    TenantState,
    TokenEntry,
    ToolEntry,
    exposed_tool_name,
)
from governance.models import Agent, AgentToken, Rule, Tenant, Tool, ToolServer


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
    return TenantState(
        id=tenant.id,
        slug=tenant.slug,
        version=tenant.version,
        agents=agents,
        tokens=tokens,
        servers=servers,
        tools=dict(sorted(tools.items())),
        policy=tenant_policy_get(tenant_id=tenant_id),
        denial_detail=tenant.denial_detail,
    )


def rule_spec(rule: Rule) -> RuleSpec:
    """A stored rule as the engine reads it. Unreadable conditions are carried, for
    ``rule_compile`` to report (and a tenant's policy to fail closed on); an unknown effect
    raises PolicyError, as there is nothing to enforce."""
    if rule.effect not in EFFECTS:
        raise PolicyError("effect", f"one of {', '.join(Effect)}")
    try:
        conditions, unreadable = conditions_parse(rule.conditions), None
    except ConditionError as exc:
        conditions, unreadable = (), (f"conditions{exc.field}", exc.message)
    return RuleSpec(
        id=rule.id or 0,
        effect=Effect(rule.effect),
        resource=rule.resource,
        resource_kind=rule.resource_kind,
        conditions=conditions,
        agent_id=rule.agent_id,
        role_id=rule.role_id,
        valid_from=rule.valid_from,
        valid_until=rule.valid_until,
        shadow=rule.shadow,
        description=rule.description,
        unreadable=unreadable,
    )


def tenant_policy_get(*, tenant_id: int) -> TenantPolicy:
    rules: list[RuleSpec] = []
    broken: dict[int, str] = {}
    for rule in Rule.objects.filter(tenant_id=tenant_id).order_by("id"):
        try:
            rules.append(rule_spec(rule))
        except PolicyError as exc:
            broken[rule.id] = str(exc)
    roles: dict[int, set[int]] = {}
    memberships = Agent.roles.through.objects.filter(agent__tenant_id=tenant_id)
    for agent_id, role_id in memberships.values_list("agent_id", "role_id"):
        roles.setdefault(agent_id, set()).add(role_id)
    return TenantPolicy(tuple(rules), {a: frozenset(r) for a, r in roles.items()}, broken)


def policy_explain(
    *, tenant: Tenant, agent: Agent, name: str, arguments: Any, kind: str = "tool"
) -> Explanation:
    """What the engine decides for this call right now, and why, rule by rule."""
    policy = tenant_policy_get(tenant_id=tenant.id).for_agent(agent.id)
    return policy.explain(kind, name, arguments, now=time.time())
