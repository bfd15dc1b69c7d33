"""Reads of the audit trail: the latest records, a filtered search, one record, a call's story.

The search's filters are shared by the API's list and its export, so both select the same rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from audit.chain import timestamp
from audit.models import AuditRecord
from governance.models import Tenant


@dataclass(frozen=True, kw_only=True)
class AuditFilters:
    """What to select; an empty value means "any"."""

    agent: str = ""  # the agent's name, exactly
    tool: str = ""  # the namespaced tool name, exactly
    decision: str = ""
    outcome: str = ""
    kind: str = ""
    call_id: uuid.UUID | None = None
    since: datetime | None = None  # created_at ≥ since
    until: datetime | None = None  # created_at < until
    q: str = ""  # case-insensitive text in tool, agent, reason, error, subject or arguments

    def condition(self) -> Q:
        """The filters as one condition (``Q()`` for none): also usable as an expression."""
        condition = Q()
        for field, value in (
            ("agent_name", self.agent),
            ("tool", self.tool),
            ("decision", self.decision),
            ("outcome", self.outcome),
            ("kind", self.kind),
            ("call_id", self.call_id),
            ("created_at__gte", self.since),
            ("created_at__lt", self.until),
        ):
            if value:
                condition &= Q(**{field: value})
        if self.q:
            # JSONField's icontains matches the arguments' JSON text (on PostgreSQL, jsonb::text).
            text = Q()
            for field in ("tool", "agent_name", "reason", "error", "subject", "arguments"):
                text |= Q(**{f"{field}__icontains": self.q})
            condition &= text
        return condition

    def as_query(self) -> dict[str, str]:
        """The filters that are set, as query text (an export's header records them)."""
        query = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, datetime):
                query[field.name] = timestamp(value)
            elif value:
                query[field.name] = str(value)
        return query


def audit_record_search(*, tenant: Tenant, filters: AuditFilters) -> QuerySet[AuditRecord]:
    """The tenant's records that match ``filters``, unordered (callers order by seq)."""
    return AuditRecord.objects.filter(filters.condition(), tenant=tenant)


def audit_record_get(*, tenant: Tenant, seq: int) -> AuditRecord | None:
    return AuditRecord.objects.filter(tenant=tenant, seq=seq).first()


def audit_call_story(*, tenant: Tenant, call_id: uuid.UUID) -> list[AuditRecord]:
    """Every record of one call (intent, verdicts, outcome), in the order they were written."""
    return list(AuditRecord.objects.filter(tenant=tenant, call_id=call_id).order_by("seq"))


def audit_record_list(*, tenant: Tenant, limit: int) -> list[AuditRecord]:
    """The tenant's latest ``limit`` records, oldest first."""
    latest = (
        AuditRecord.objects.filter(tenant=tenant).select_related("tenant").order_by("-seq")[:limit]
    )
    return list(reversed(latest))


def audit_record_as_dict(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "seq": record.seq,
        "call_id": str(record.call_id),
        "kind": record.kind,
        "tenant": record.tenant.slug,
        "agent": record.agent_name,
        "agent_id": record.agent_id,
        "transport": record.transport,
        "protocol_era": record.protocol_era,
        "protocol_version": record.protocol_version,
        "request_id": record.request_id,
        "tool": record.tool,
        "arguments": record.arguments,
        "decision": record.decision,
        "reason": record.reason,
        "rule_id": record.rule_id,
        "shadow": record.shadow,
        "policy_version": record.policy_version,
        "guardrails": record.guardrails,
        "flagged": record.flagged,
        "outcome": record.outcome,
        "error": record.error,
        "result_digest": record.result_digest,
        "latency_us": record.latency_us,
        "started_at": record.started_at.isoformat(),
        "created_at": record.created_at.isoformat(),
        "actor": record.actor,
        "subject": record.subject,
        "diff": record.diff,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }
