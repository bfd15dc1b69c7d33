"""Writes to the audit trail beyond the gateway's records: checkpoints, retention, admin acts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from audit.chain import chain_append, timestamp
from audit.chainproof import checkpoint_message
from audit.models import AuditRecord, ChainHead, Checkpoint
from audit.signing import sign
from governance.engine.guardrails.base import Payload
from governance.models import Tenant

PRUNE_BATCH = 10_000  # records deleted per transaction: short write locks for the gateway


def checkpoint_create(
    *, tenant: Tenant, reason: str = Checkpoint.Reason.MANUAL
) -> Checkpoint | None:
    """Sign the tenant's chain head as it is now. None if the chain is empty, or (periodic)
    if the head has not moved since the last checkpoint."""
    with transaction.atomic():
        head = ChainHead.objects.select_for_update().filter(tenant=tenant).first()
        if head is None or head.seq == 0:
            return None
        if reason == Checkpoint.Reason.PERIODIC:
            last = Checkpoint.objects.filter(tenant=tenant).order_by("-seq").first()
            if last is not None and last.seq >= head.seq:
                return None
        return _checkpoint(tenant.id, head.seq, head.hash, reason)


def _checkpoint(tenant_id: int, seq: int, hash: str, reason: str) -> Checkpoint:
    signed_at = timestamp(timezone.now())
    message = checkpoint_message(
        tenant=tenant_id, seq=seq, hash=hash, signed_at=signed_at, reason=reason
    )
    key_id, signature = sign(message)
    return Checkpoint.objects.create(
        tenant_id=tenant_id,
        seq=seq,
        hash=hash,
        reason=reason,
        signed_at=signed_at,
        key_id=key_id,
        signature=signature,
    )


def checkpoints_create_all() -> int:
    """Beat's periodic checkpoints: one per tenant whose chain moved. How many were made."""
    made = 0
    for tenant in Tenant.objects.order_by("id"):
        made += checkpoint_create(tenant=tenant, reason=Checkpoint.Reason.PERIODIC) is not None
    return made


@dataclass(frozen=True)
class PruneResult:
    tenant: str
    pruned: int
    through_seq: int  # the last pruned record; the retention checkpoint signs it


def audit_prune(*, tenant: Tenant, now: datetime | None = None) -> PruneResult:
    """Delete the tenant's records older than its retention period, oldest first.

    The one deletion of audit records. Each batch leaves a signed retention checkpoint on its
    last record, in the same transaction, so the chain that remains verifies from there; the
    pruning itself is then recorded in the chain as an ``admin`` record.
    """
    if tenant.audit_retention_days is None:
        return PruneResult(tenant.slug, 0, 0)
    cutoff = (now or timezone.now()) - timedelta(days=tenant.audit_retention_days)
    # Records are chained in commit order, and created_at is taken a little before; prune up
    # to the first record that is still young, so no young record goes.
    young = AuditRecord.objects.filter(tenant=tenant, created_at__gte=cutoff).order_by("seq")
    first_young = young.values_list("seq", flat=True).first()
    pruned, through = 0, 0
    while True:
        with transaction.atomic():
            ChainHead.objects.select_for_update().filter(tenant=tenant).first()
            old = AuditRecord.objects.filter(tenant=tenant).order_by("seq")
            if first_young is not None:
                old = old.filter(seq__lt=first_young)
            last = old[PRUNE_BATCH - 1 : PRUNE_BATCH].first() or old.last()
            if last is None:
                break
            _checkpoint(tenant.id, last.seq, last.hash, Checkpoint.Reason.RETENTION)
            pruned += AuditRecord.objects.filter(tenant=tenant, seq__lte=last.seq).prune()
            # Checkpoints of pruned records sign what no longer exists; the new one replaces them.
            Checkpoint.objects.filter(tenant=tenant, seq__lt=last.seq).delete()
            through = last.seq
    if pruned:
        with transaction.atomic():
            action_record(
                tenant=tenant,
                actor="retention",
                action="pruned",
                subject=f"audit records seq ..{through}",
                diff={
                    "pruned": pruned,
                    "through_seq": through,
                    "older_than": timestamp(cutoff),
                    "retention_days": tenant.audit_retention_days,
                },
            )
    return PruneResult(tenant.slug, pruned, through)


def audit_prune_all() -> list[PruneResult]:
    tenants = Tenant.objects.filter(audit_retention_days__isnull=False).order_by("id")
    return [audit_prune(tenant=tenant) for tenant in tenants]


def action_record(
    *,
    tenant: Tenant | int,
    actor: str,
    action: str,
    subject: str,
    diff: dict[str, Any],
    kind: str = AuditRecord.Kind.ADMIN,
    call_id: uuid.UUID | None = None,
    started_at: datetime | None = None,
    **call: Any,
) -> AuditRecord:
    """Record in the chain that ``actor`` did ``action`` to ``subject`` (with the ``diff``:
    ``{field: [before, after]}``). Call it inside the transaction of the change itself.

    An ``admin`` record is an act of its own (its story is this one record). An ``approval``
    record is a step of the call ``call_id``, which started at ``started_at``, and carries
    that call's fields (``call``: agent, tool, decision, rule…). Long strings are clipped as a
    call's arguments are: an upstream's huge description included."""
    now = timezone.now()
    record = AuditRecord(
        **{"transport": "", "protocol_era": "", "tool": "", "decision": "", **call},
        call_id=call_id or uuid.uuid4(),
        kind=kind,
        tenant_id=tenant if isinstance(tenant, int) else tenant.id,
        reason=action[:500],
        actor=actor[:150],
        subject=subject[:300],
        diff=Payload(diff).clipped(settings.AUDIT_MAX_STRING_CHARS),
        started_at=started_at or now,
        created_at=now,
    )
    chain_append([record])
    return record


# What an outcome written for a dead gateway's intent does not copy from it.
_NOT_COPIED = {"id", "seq", "prev_hash", "hash", "kind", "outcome", "error", "created_at"}
_CALL_FIELDS = tuple(
    f.attname for f in AuditRecord._meta.concrete_fields if f.attname not in _NOT_COPIED
)


def calls_interrupt(*, since: datetime, before: datetime, why: str) -> int:
    """Record the outcome ``interrupted`` for every call whose intent was written in
    [``since``, ``before``) and has no outcome: its gateway died before answering. Call it
    inside a transaction that keeps a second recovery out (``nodes_recover`` locks the nodes).
    Returns how many calls."""
    answered = AuditRecord.objects.filter(
        tenant_id=OuterRef("tenant_id"), call_id=OuterRef("call_id"), kind=AuditRecord.Kind.OUTCOME
    )
    intents = (
        AuditRecord.objects.filter(
            kind=AuditRecord.Kind.INTENT, created_at__gte=since, created_at__lt=before
        )
        .exclude(Exists(answered))
        .order_by("id")
        .values(*_CALL_FIELDS)
    )
    now = timezone.now()
    records = [
        AuditRecord(
            **intent,
            kind=AuditRecord.Kind.OUTCOME,
            outcome=AuditRecord.Outcome.INTERRUPTED,
            error=why,
            created_at=now,
        )
        for intent in intents
    ]
    chain_append(records)
    return len(records)
