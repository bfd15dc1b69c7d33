from __future__ import annotations

from typing import Any

from audit.models import AuditRecord
from governance.models import Tenant


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
