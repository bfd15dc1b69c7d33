"""Governance changes, recorded in the tenant's audit chain: who did what to which object,
with the diff ``{field: [before, after]}``.

Every write to governance data (the admin, the services, the gateway's own catalog changes)
goes through here, inside the transaction of the change, so a change and its record commit
or roll back together. A snapshot holds an object's values as they are (only in memory);
secrets are masked when a diff is made of them, so none ever reaches the chain.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from django.db import router
from django.db.models import Model
from django.db.models.deletion import Collector

from audit.models import AuditRecord
from audit.services import action_record
from governance.engine.guardrails.base import Context, Payload, Stage
from governance.engine.guardrails.secrets import Secrets
from governance.models import (
    Agent,
    AgentToken,
    Guardrail,
    Membership,
    RateLimit,
    Role,
    Rule,
    Tenant,
    Tool,
    ToolServer,
)

SYSTEM = "system"  # the actor of internal callers that name none (tests, fixtures, scripts)
GATEWAY = "gateway"  # the actor of the gateway's own changes: a tool server's catalog
MASK = "***"

# Never recorded: the token's digest is what the gateway looks a token up by.
_OMITTED: dict[type[Model], frozenset[str]] = {AgentToken: frozenset({"digest"})}
# Recorded as MASK, key by key: a tool server's environment and headers carry API keys.
_MASKED: dict[type[Model], frozenset[str]] = {ToolServer: frozenset({"env", "headers"})}
# Recorded with what the secrets guardrail finds redacted: a --token argument, a URL's key.
_SCRUBBED: dict[type[Model], frozenset[str]] = {ToolServer: frozenset({"command", "args", "url"})}
# Bookkeeping, not a change of what agents may do: bumped by every change.
_IGNORED: dict[type[Model], frozenset[str]] = {
    Tenant: frozenset({"version"}),
    Agent: frozenset({"last_seen_at"}),  # presence, written by the gateways
}
# Reverse many-to-many relations that are part of the object: who holds a role.
_MEMBERS: dict[type[Model], tuple[str, ...]] = {Role: ("agents",)}
# Deleted along with another object and recorded with it (a cascade from an agent or server).
_GOVERNED = (Agent, AgentToken, ToolServer, Tool, Role, Rule, Guardrail, RateLimit, Membership)


@dataclass(frozen=True)
class Snapshot:
    """An object's values by field name: foreign keys as ids, many-to-many as sorted ids."""

    model: type[Model]
    values: dict[str, Any]


def object_snapshot(obj: Model) -> Snapshot:
    model = type(obj)
    skip = _OMITTED.get(model, frozenset()) | _IGNORED.get(model, frozenset())
    values: dict[str, Any] = {}
    for f in model._meta.concrete_fields:
        if f.primary_key or f.name in skip or getattr(f, "auto_now", False):
            continue
        if getattr(f, "auto_now_add", False):
            continue
        value = getattr(obj, f.attname)
        values[f.name] = _plain(value if value is None or f.is_relation else f.to_python(value))
    for name in [f.name for f in model._meta.many_to_many] + list(_MEMBERS.get(model, ())):
        related = getattr(obj, name).values_list("pk", flat=True) if obj.pk is not None else []
        values[name] = sorted(related)
    return Snapshot(model, values)


def _plain(value: Any) -> Any:
    """A field's value as JSON: aware date-times in UTC, so a form's local time and the
    database's UTC compare (and read) alike."""
    if isinstance(value, datetime):
        return (value.astimezone(UTC) if value.tzinfo else value).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, str):
        return str(value)  # a TextChoices member as its plain value
    return value


def snapshot_diff(before: Snapshot | None, after: Snapshot | None) -> dict[str, list[Any]]:
    """``{field: [before, after]}`` of the fields that differ, secrets masked; every field
    of a created (``before`` None) or deleted (``after`` None) object."""
    either = after or before
    if either is None:
        return {}
    model = either.model
    old = before.values if before else {}
    new = after.values if after else {}
    diff: dict[str, list[Any]] = {}
    for name in dict.fromkeys([*old, *new]):
        if before and after and old.get(name) == new.get(name):
            continue
        diff[name] = [
            _public(model, name, old[name]) if before else None,
            _public(model, name, new[name]) if after else None,
        ]
    return diff


def _public(model: type[Model], name: str, value: Any) -> Any:
    if value in (None, "", [], {}):
        return value
    if name in _MASKED.get(model, ()):
        return dict.fromkeys(value, MASK) if isinstance(value, dict) else MASK
    if name in _SCRUBBED.get(model, ()):
        return _scrubbed(value)
    return value


def _scrubbed(value: Any) -> Any:
    checker = Secrets({})
    payload = Payload(value)
    findings = checker.scan(payload, Context(stage=Stage.INPUT, tool=""))
    if not findings:
        return value
    redacted = checker.redact(payload, findings)
    return MASK if redacted is None else redacted


def object_key(obj: Model) -> str:
    """``governance.rule 12``: the object's model and id."""
    return f"{obj._meta.label_lower} {obj.pk}"


def object_subject(obj: Model) -> str:
    """``governance.rule 12 '#12 deny shell__* for *'``: what an admin record is about."""
    return f"{object_key(obj)} '{obj}'"


def tenant_id_of(obj: Model) -> int:
    if isinstance(obj, Tenant):
        return obj.id
    if isinstance(obj, AgentToken):
        return obj.agent.tenant_id
    if isinstance(obj, Tool):
        return obj.server.tenant_id
    return obj.tenant_id  # type: ignore[attr-defined, no-any-return]


def change_record(
    *,
    actor: str,
    action: str,
    obj: Model,
    before: Snapshot | None,
) -> AuditRecord | None:
    """Record that ``actor`` did ``action`` to ``obj``: from ``before`` (None: created) to
    what it is now. Nothing is recorded when nothing changed."""
    diff = snapshot_diff(before, object_snapshot(obj))
    if not diff:
        return None
    return action_record(
        tenant=tenant_id_of(obj), actor=actor, action=action, subject=object_subject(obj), diff=diff
    )


# --- deletions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Removal:
    """An object about to be deleted, as it was: once deleted it has no id, and its related
    objects (in its name) may be gone."""

    tenant_id: int
    subject: str
    snapshot: Snapshot
    cascade_of: str  # the subject of the object whose deletion takes this one along; or ""


class _CollectAll(Collector):
    """Django's deletion collector, made to list every object it will delete (it deletes
    some in bulk, unseen, otherwise)."""

    def can_fast_delete(self, *args: Any, **kwargs: Any) -> bool:
        return False


def removals_prepare(objs: Iterable[Model]) -> list[Removal]:
    """What deleting ``objs`` will delete of governance data, each object first and then the
    objects its deletion cascades to. Call it before the deletion. A tenant is not recorded:
    its audit chain goes with it (or, once it has records, the chain forbids deleting it)."""
    removals: list[Removal] = []
    seen: set[tuple[type[Model], Any]] = set()
    for obj in objs:
        if isinstance(obj, Tenant) or (type(obj), obj.pk) in seen:
            continue
        root = object_subject(obj)
        removals.append(Removal(tenant_id_of(obj), root, object_snapshot(obj), ""))
        seen.add((type(obj), obj.pk))
        collector = _CollectAll(using=router.db_for_write(type(obj), instance=obj))
        collector.collect([obj])
        cascaded = [
            other
            for model, instances in collector.data.items()
            if issubclass(model, _GOVERNED)
            for other in instances
        ]
        for other in sorted(cascaded, key=lambda o: (o._meta.label_lower, o.pk)):
            if (type(other), other.pk) in seen:
                continue
            seen.add((type(other), other.pk))
            removals.append(
                Removal(tenant_id_of(other), object_subject(other), object_snapshot(other), root)
            )
    return removals


def removals_record(
    removals: Iterable[Removal], *, actor: str, action: str = "deleted"
) -> list[AuditRecord]:
    """Record the deletions ``removals_prepare`` listed, once they are done."""
    return [
        action_record(
            tenant=removal.tenant_id,
            actor=actor,
            action=f"{action} with {removal.cascade_of}" if removal.cascade_of else action,
            subject=removal.subject,
            diff=snapshot_diff(removal.snapshot, None),
        )
        for removal in removals
    ]


# --- many objects, one record ------------------------------------------------------------------
def objects_state(objs: Iterable[Model]) -> dict[str, Snapshot]:
    """Snapshots of many objects by ``object_key``: the before or after of a bulk change."""
    return {object_key(obj): object_snapshot(obj) for obj in objs}


def objects_diff(
    before: dict[str, Snapshot], after: dict[str, Snapshot]
) -> dict[str, list[dict[str, Any] | None]]:
    """``{object_key: [fields before, fields after]}`` of each object created (None before),
    deleted (None after) or changed (the fields that differ) between two states."""
    diff: dict[str, list[dict[str, Any] | None]] = {}
    for key in sorted(before.keys() | after.keys(), key=_key_order):
        old, new = before.get(key), after.get(key)
        fields = snapshot_diff(old, new)
        if fields:
            diff[key] = [
                {name: pair[0] for name, pair in fields.items()} if old else None,
                {name: pair[1] for name, pair in fields.items()} if new else None,
            ]
    return diff


def _key_order(key: str) -> tuple[str, int]:
    label, _, pk = key.partition(" ")
    return label, int(pk) if pk.isdigit() else 0
