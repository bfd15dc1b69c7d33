"""Writes to a tenant's policy: roles, rules, and the whole policy as a YAML document.

Every write validates with the engine's own compiler (one definition of a valid rule),
bumps the tenant's version in the same transaction, so every gateway process applies it, and
is recorded in the tenant's audit chain as ``actor``'s act.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic import ValidationError as SchemaError

from audit.services import action_record
from governance.engine.policy import PolicyError, rule_compile
from governance.models import Agent, Role, Rule, Tenant
from governance.selectors import rule_spec
from governance.services.changes import (
    SYSTEM,
    Snapshot,
    change_record,
    object_subject,
    objects_diff,
    objects_state,
    removals_prepare,
    removals_record,
)
from governance.services.versions import tenant_version_bump

POLICY_FORMAT = 1


def rule_validate(*, rule: Rule) -> None:
    """Raise ValidationError (by model field) unless the rule compiles and its role or agent
    belongs to its tenant."""
    if rule.role_id and rule.role.tenant_id != rule.tenant_id:
        raise ValidationError({"role": "this role belongs to another tenant"})
    if rule.agent_id and rule.agent.tenant_id != rule.tenant_id:
        raise ValidationError({"agent": "this agent belongs to another tenant"})
    try:
        rule_compile(rule_spec(rule))
    except PolicyError as exc:
        model_field = exc.field.split("[", 1)[0].split(".", 1)[0]
        message = exc.message if model_field == exc.field else str(exc)
        raise ValidationError({model_field: message}) from None


def role_create(
    *,
    tenant: Tenant,
    name: str,
    description: str = "",
    agents: Iterable[Agent] = (),
    actor: str = SYSTEM,
) -> Role:
    with transaction.atomic():
        role = Role.objects.create(tenant=tenant, name=name, description=description)
        role.agents.set(agents)
        tenant_version_bump(tenant_id=tenant.id)
        change_record(actor=actor, action="created", obj=role, before=None)
    return role


def rule_create(
    *,
    tenant: Tenant,
    effect: str,
    resource: str,
    conditions: list[dict[str, Any]] | None = None,
    role: Role | None = None,
    agent: Agent | None = None,
    resource_kind: str = Rule.ResourceKind.TOOL,
    shadow: bool = False,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    description: str = "",
    actor: str = SYSTEM,
) -> Rule:
    rule = Rule(
        tenant=tenant,
        effect=effect,
        resource=resource,
        conditions=conditions or [],
        role=role,
        agent=agent,
        resource_kind=resource_kind,
        shadow=shadow,
        valid_from=valid_from,
        valid_until=valid_until,
        description=description,
    )
    rule_validate(rule=rule)
    with transaction.atomic():
        rule.save()
        tenant_version_bump(tenant_id=tenant.id)
        change_record(actor=actor, action="created", obj=rule, before=None)
    return rule


def rule_delete(*, rule: Rule, actor: str = SYSTEM) -> None:
    with transaction.atomic():
        removals = removals_prepare([rule])
        rule.delete()
        tenant_version_bump(tenant_id=rule.tenant_id)
        removals_record(removals, actor=actor)


# --- policy as code ----------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RuleDoc(_Strict):
    id: int | None = Field(None, description="Keeps the rule's id, and its audit references.")
    effect: Literal["allow", "deny", "require_approval"]
    resource: str = Field(min_length=1, max_length=200)
    kind: Literal["tool"] = "tool"
    conditions: list[dict[str, Any]] = []
    # Not strict: YAML has timestamps, JSON (also valid YAML) only ISO 8601 strings.
    valid_from: AwareDatetime | None = Field(None, strict=False)
    valid_until: AwareDatetime | None = Field(None, strict=False)
    shadow: bool = False
    description: str = Field("", max_length=300)


class RoleDoc(_Strict):
    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    agents: list[str] = []
    rules: list[RuleDoc] = []


class PolicyDoc(_Strict):
    format: Literal[1] = POLICY_FORMAT
    tenant: str | None = None  # informative: the export names its tenant
    roles: list[RoleDoc] = []
    everyone: list[RuleDoc] = []
    agents: dict[str, list[RuleDoc]] = {}


@dataclass
class PolicyImportError(Exception):
    """Everything wrong with a document, each with where: ``roles[0].rules[2].resource``."""

    errors: list[tuple[str, str]]

    def __str__(self) -> str:
        return "\n".join(f"{where}: {message}" for where, message in self.errors)


def _counts() -> dict[str, int]:
    return {"created": 0, "updated": 0, "deleted": 0}


@dataclass
class ImportSummary:
    roles: dict[str, int] = field(default_factory=_counts)
    rules: dict[str, int] = field(default_factory=_counts)

    def __str__(self) -> str:
        def part(name: str, counts: dict[str, int]) -> str:
            return f"{name}: " + ", ".join(f"{v} {k}" for k, v in counts.items())

        return f"{part('roles', self.roles)}; {part('rules', self.rules)}"


def _rule_doc(rule: Rule) -> dict[str, Any]:
    doc: dict[str, Any] = {"id": rule.id, "effect": rule.effect, "resource": rule.resource}
    if rule.resource_kind != Rule.ResourceKind.TOOL:
        doc["kind"] = rule.resource_kind
    if rule.conditions:
        doc["conditions"] = rule.conditions
    for name in ("valid_from", "valid_until"):
        if (value := getattr(rule, name)) is not None:
            doc[name] = value
    if rule.shadow:
        doc["shadow"] = True
    if rule.description:
        doc["description"] = rule.description
    return doc


def policy_export(*, tenant: Tenant) -> str:
    """The tenant's roles, memberships and rules as a YAML document ``policy_import`` reads."""
    rules = list(Rule.objects.filter(tenant=tenant).order_by("id"))
    roles = Role.objects.filter(tenant=tenant).order_by("name").prefetch_related("agents")
    agents = {a.id: a.name for a in Agent.objects.filter(tenant=tenant)}
    document: dict[str, Any] = {
        "format": POLICY_FORMAT,
        "tenant": tenant.slug,
        "roles": [
            {
                "name": role.name,
                **({"description": role.description} if role.description else {}),
                "agents": sorted(a.name for a in role.agents.all()),
                "rules": [_rule_doc(r) for r in rules if r.role_id == role.id],
            }
            for role in roles
        ],
        "everyone": [_rule_doc(r) for r in rules if r.role_id is None and r.agent_id is None],
        "agents": {
            name: [_rule_doc(r) for r in rules if r.agent_id == agent_id]
            for agent_id, name in sorted(agents.items(), key=lambda item: item[1])
            if any(r.agent_id == agent_id for r in rules)
        },
    }
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def _where(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"


def _parse(text: str | bytes) -> PolicyDoc:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "document"
        problem = getattr(exc, "problem", None) or exc
        raise PolicyImportError([(where, f"not valid YAML: {problem}")]) from None
    if raw is None:
        # Importing "nothing" would delete every rule: too easy by mistake (an empty file, a
        # failed pipe). An empty policy is said explicitly: "format: 1".
        raise PolicyImportError(
            [("document", "empty; to remove every role and rule, import `format: 1`")]
        )
    try:
        return PolicyDoc.model_validate(raw)
    except SchemaError as exc:
        raise PolicyImportError(
            [(_where(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
        ) from None


@dataclass
class _Plan:
    """A validated document, resolved against the tenant: where each rule goes."""

    agents: dict[str, Agent]
    existing_rules: dict[int, Rule]
    role_names: set[str] = field(default_factory=set)
    kept_ids: set[int] = field(default_factory=set)
    placed: list[tuple[RuleDoc, str | None, str | None]] = field(default_factory=list)


def policy_import(
    *, tenant: Tenant, text: str | bytes, dry_run: bool = False, actor: str = SYSTEM
) -> ImportSummary:
    """Make the tenant's roles, memberships and rules exactly what the document says.

    Everything is validated first and every problem reported with its location; then the
    change is applied in one transaction (all or nothing) and the tenant's version bumped.
    Roles are matched by name, rules by ``id``; rules without an id are created; roles and
    rules the document does not mention are deleted. A dry run counts the same changes and
    keeps none. An import that changes something is recorded as one ``imported`` record:
    each role and rule created, changed or deleted, with its fields before and after.
    """
    doc = _parse(text)
    plan = _plan(doc, tenant)
    with transaction.atomic():
        before = {} if dry_run else _policy_state(tenant)
        summary = _apply(doc, plan, tenant)
        if dry_run:
            transaction.set_rollback(True)  # counted, not kept
        else:
            tenant_version_bump(tenant_id=tenant.id)
            diff = objects_diff(before, _policy_state(tenant))
            if diff:
                action_record(
                    tenant=tenant,
                    actor=actor,
                    action="imported",
                    subject=object_subject(tenant),
                    diff=diff,
                )
    return summary


def _policy_state(tenant: Tenant) -> dict[str, Snapshot]:
    """The tenant's roles and rules, locked: what the import's record compares."""
    roles = Role.objects.select_for_update().filter(tenant=tenant).order_by("id")
    rules = Rule.objects.select_for_update().filter(tenant=tenant).order_by("id")
    return objects_state([*roles, *rules])


def _plan(doc: PolicyDoc, tenant: Tenant) -> _Plan:
    """Check the document against the tenant and the engine; raise every problem at once."""
    plan = _Plan(
        agents={a.name: a for a in Agent.objects.filter(tenant=tenant)},
        existing_rules={r.id: r for r in Rule.objects.filter(tenant=tenant)},
    )
    errors: list[tuple[str, str]] = []
    if doc.tenant is not None and doc.tenant != tenant.slug:
        errors.append(
            (
                "tenant",
                f"this document is for tenant {doc.tenant!r}, not {tenant.slug!r}; "
                "change or remove the line to apply it here",
            )
        )
    located: list[tuple[str, RuleDoc, str | None, str | None]] = []
    for i, role in enumerate(doc.roles):
        if role.name in plan.role_names:
            errors.append((f"roles[{i}].name", f"role {role.name!r} appears twice"))
        plan.role_names.add(role.name)
        for j, name in enumerate(role.agents):
            if name not in plan.agents:
                errors.append((f"roles[{i}].agents[{j}]", f"no agent {name!r} in this tenant"))
        located += [
            (f"roles[{i}].rules[{k}]", r, role.name, None) for k, r in enumerate(role.rules)
        ]
    located += [(f"everyone[{k}]", r, None, None) for k, r in enumerate(doc.everyone)]
    for name, rules in doc.agents.items():
        if name not in plan.agents:
            errors.append((f"agents.{name}", f"no agent {name!r} in this tenant"))
        located += [(f"agents.{name}[{k}]", r, None, name) for k, r in enumerate(rules)]

    for where, rule_doc, role_name, agent_name in located:
        if rule_doc.id is not None:
            if rule_doc.id in plan.kept_ids:
                errors.append((f"{where}.id", f"rule id {rule_doc.id} appears twice"))
            elif rule_doc.id not in plan.existing_rules:
                message = f"no rule {rule_doc.id} in this tenant; leave id out to add one"
                errors.append((f"{where}.id", message))
            plan.kept_ids.add(rule_doc.id)
        candidate = Rule(tenant=tenant, **_rule_fields(rule_doc), agent=plan.agents.get(agent_name))
        try:
            rule_compile(rule_spec(candidate))
        except PolicyError as exc:
            errors.append((f"{where}.{exc.field}", exc.message))
        plan.placed.append((rule_doc, role_name, agent_name))
    if errors:
        raise PolicyImportError(errors)
    return plan


def _apply(doc: PolicyDoc, plan: _Plan, tenant: Tenant) -> ImportSummary:
    summary = ImportSummary()
    roles = {r.name: r for r in Role.objects.select_for_update().filter(tenant=tenant)}
    for role_doc in doc.roles:
        role = roles.get(role_doc.name)
        if role is None:
            roles[role_doc.name] = Role.objects.create(
                tenant=tenant, name=role_doc.name, description=role_doc.description
            )
            summary.roles["created"] += 1
        elif role.description != role_doc.description:
            role.description = role_doc.description
            role.save(update_fields=["description"])
            summary.roles["updated"] += 1
        roles[role_doc.name].agents.set([plan.agents[n] for n in role_doc.agents])
    stale = set(plan.existing_rules) - plan.kept_ids
    Rule.objects.filter(id__in=stale).delete()
    summary.rules["deleted"] = len(stale)
    for rule_doc, role_name, agent_name in plan.placed:
        fields = {
            **_rule_fields(rule_doc),
            "role": roles[role_name] if role_name else None,
            "agent": plan.agents[agent_name] if agent_name else None,
        }
        if rule_doc.id is None:
            Rule.objects.create(tenant=tenant, **fields)
            summary.rules["created"] += 1
            continue
        rule = plan.existing_rules[rule_doc.id]
        if any(getattr(rule, k) != v for k, v in fields.items()):
            for key, value in fields.items():
                setattr(rule, key, value)
            rule.save()
            summary.rules["updated"] += 1
    # Last: deleting a role deletes its rules, and the document may have moved some of them
    # to another role (a renamed role keeps its rules' ids).
    for name in set(roles) - plan.role_names:
        roles.pop(name).delete()
        summary.roles["deleted"] += 1
    return summary


def _rule_fields(doc: RuleDoc) -> dict[str, Any]:
    return {
        "effect": doc.effect,
        "resource": doc.resource,
        "resource_kind": doc.kind,
        "conditions": doc.conditions,
        "valid_from": doc.valid_from,
        "valid_until": doc.valid_until,
        "shadow": doc.shadow,
        "description": doc.description,
    }
