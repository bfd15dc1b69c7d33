"""Reads: the governance snapshot a gateway process keeps in memory; who may review a
tenant; approval requests."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from governance.engine.conditions import ConditionError, conditions_parse
from governance.engine.guardrails.base import Action
from governance.engine.guardrails.pipeline import GuardrailSpec, TenantGuardrails
from governance.engine.limits import LimitSpec
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
from governance.models import (
    Agent,
    AgentToken,
    ApprovalRequest,
    Guardrail,
    Membership,
    RateLimit,
    Rule,
    Tenant,
    Tool,
    ToolServer,
)


def tenant_versions() -> dict[int, int]:
    """One cheap query every gateway process polls: tenant id → governance version."""
    return dict(Tenant.objects.values_list("id", "version"))


def tenant_states_changed(
    *, known: dict[int, int]
) -> tuple[dict[int, int], dict[int, TenantState]]:
    """Every tenant's version, and the state of each whose version differs from ``known``
    (tenant id → version): what a gateway's refresh needs, in one trip to the database."""
    versions = tenant_versions()
    changed = {
        tenant_id: tenant_state_get(tenant_id=tenant_id)
        for tenant_id, version in versions.items()
        if known.get(tenant_id) != version
    }
    return versions, changed


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
    quarantined: dict[str, str] = {}
    catalog = Tool.objects.filter(server_id__in=servers).order_by("server__name", "name")
    for tool in catalog:
        server = servers[tool.server_id]
        exposed = exposed_tool_name(server.name, tool.name)
        if tool.status != Tool.Status.APPROVED:
            quarantined.setdefault(exposed, tool.quarantine_reason or "not approved yet")
            continue
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
        quarantined={name: why for name, why in quarantined.items() if name not in tools},
        policy=tenant_policy_get(tenant_id=tenant_id),
        denial_detail=tenant.denial_detail,
        approval_timeout_seconds=float(tenant.approval_timeout_seconds),
        guardrails=tenant_guardrails_get(tenant_id=tenant_id),
        rate_limits=rate_limits_get(tenant_id=tenant_id),
    )


def tenant_guardrails_get(*, tenant_id: int) -> TenantGuardrails:
    specs = [
        GuardrailSpec(
            id=g.id,
            name=g.name,
            agent_id=g.agent_id,
            tool=g.tool,
            enabled=g.enabled,
            stage=g.stage,
            action=Action(g.action),
            failure_mode=g.failure_mode,
            mode=g.mode,
            timeout_seconds=g.timeout_seconds,
            config=g.config if isinstance(g.config, dict) else {"": g.config},
        )
        for g in Guardrail.objects.filter(tenant_id=tenant_id).order_by("id")
    ]
    return TenantGuardrails(specs, record_limit=settings.AUDIT_MAX_STRING_CHARS)


def rate_limits_get(*, tenant_id: int) -> tuple[LimitSpec, ...]:
    return tuple(
        LimitSpec(
            id=r.id,
            tenant_id=tenant_id,
            scope=r.scope,
            agent_id=r.agent_id,
            tool=r.tool,
            calls=r.calls,
            window_seconds=r.window_seconds,
            concurrent=r.concurrent,
            description=r.description,
        )
        for r in RateLimit.objects.filter(tenant_id=tenant_id, enabled=True).order_by("id")
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


# --- who may review a tenant -------------------------------------------------------------------
_ROLE_RANK = {Membership.Role.REVIEWER: 1, Membership.Role.ADMIN: 2}


def member_role(*, user: AbstractBaseUser | AnonymousUser, tenant: Tenant) -> str | None:
    """The user's role in the tenant (``reviewer`` or ``admin``), or None: no access at all.
    Superusers are admins of every tenant."""
    if not user.is_authenticated or not user.is_active:
        return None
    if getattr(user, "is_superuser", False):
        return Membership.Role.ADMIN
    role = Membership.objects.filter(user_id=user.pk, tenant=tenant).values_list("role", flat=True)
    return role.first()


@dataclass(frozen=True)
class Access:
    """Who is looking at which tenant (the dashboard, the REST API), and in which role."""

    tenant: Tenant
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == Membership.Role.ADMIN

    def allows(self, role: str) -> bool:
        """Whether this role may do what needs ``role`` (admin includes reviewer)."""
        return _ROLE_RANK[self.role] >= _ROLE_RANK[role]


def tenant_access(*, user: AbstractBaseUser | AnonymousUser, slug: str) -> Access | None:
    """The tenant named ``slug`` and the user's role in it; None when there is no such tenant
    or the user is not a member (the two look alike to an outsider)."""
    tenant = Tenant.objects.filter(slug=slug).first()
    if tenant is None:
        return None
    role = member_role(user=user, tenant=tenant)
    return None if role is None else Access(tenant=tenant, role=role)


def member_tenants(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Tenant]:
    """The tenants the user may see, by slug."""
    if not user.is_authenticated or not user.is_active:
        return Tenant.objects.none()
    if getattr(user, "is_superuser", False):
        return Tenant.objects.order_by("slug")
    return Tenant.objects.filter(memberships__user_id=user.pk).order_by("slug")


# --- approval requests -------------------------------------------------------------------------
def approval_list(*, tenant: Tenant, status: str | None = None) -> QuerySet[ApprovalRequest]:
    """The tenant's requests, newest first; pending ones are the reviewers' queue."""
    approvals = ApprovalRequest.objects.filter(tenant=tenant).select_related("agent")
    if status is not None:
        approvals = approvals.filter(status=status)
    return approvals.order_by("-created_at")


def approval_get(*, tenant: Tenant, approval_id: uuid.UUID) -> ApprovalRequest | None:
    return approval_list(tenant=tenant).filter(pk=approval_id).first()


def approval_statuses(*, ids: list[uuid.UUID]) -> dict[uuid.UUID, ApprovalRequest]:
    """The requests among ``ids`` that are no longer pending: what a holding gateway polls."""
    closed = ApprovalRequest.objects.filter(pk__in=ids).exclude(
        status=ApprovalRequest.Status.PENDING
    )
    return {a.pk: a for a in closed}
