"""The audit trail: one row per step of a governed call, linked by call_id, chained per tenant.

Records are append-only: the model refuses updates and deletes. Retention
(``audit.services.audit_prune``) is the one deletion, and it leaves a signed checkpoint.
The chain's format is defined in ``audit/chainproof.py``; docs/audit.md explains it.
"""

from __future__ import annotations

from typing import Any, NoReturn

from django.db import models


class AppendOnlyError(Exception):
    """Audit records are never changed or deleted (retention pruning aside)."""


class AuditRecordQuerySet(models.QuerySet["AuditRecord"]):
    def update(self, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit records are append-only: they cannot be updated")

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit records are append-only: they cannot be updated")

    def delete(self) -> NoReturn:
        raise AppendOnlyError("audit records are append-only: they cannot be deleted")

    def prune(self) -> int:
        """Delete these records: for retention alone (``audit_prune``), which signs what stays."""
        deleted, _ = super().delete()
        return deleted


class AuditRecord(models.Model):
    class Kind(models.TextChoices):
        INTENT = "intent"  # the decision, durable before any upstream side effect
        OUTCOME = "outcome"  # what happened, durable before the reply is released
        VERDICT = "verdict"  # a post-hoc (slow) guardrail verdict, written when it arrives
        ADMIN = "admin"  # a person (or retention) changed governance data: actor, subject, diff
        APPROVAL = "approval"  # a step of a call's approval request: actor, subject, diff

    class Decision(models.TextChoices):
        ALLOW = "allow"
        DENY = "deny"
        REQUIRE_APPROVAL = "require_approval"

    class Outcome(models.TextChoices):
        OK = "ok"
        TOOL_ERROR = "tool_error"  # the upstream answered with isError
        DENIED = "denied"
        BLOCKED = "blocked"  # a guardrail blocked the arguments or withheld the result
        RATE_LIMITED = "rate_limited"
        TIMEOUT = "timeout"
        UPSTREAM_DOWN = "upstream_down"
        UPSTREAM_ERROR = "upstream_error"  # the upstream answered with a JSON-RPC error
        CANCELLED = "cancelled"
        INTERRUPTED = "interrupted"  # forwarded, but the gateway died before an answer

    # The chain: gap-free per tenant; hash = SHA-256(prev_hash ‖ SHA-256(canonical document)).
    seq = models.PositiveBigIntegerField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    call_id = models.UUIDField(db_index=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    tenant = models.ForeignKey("governance.Tenant", on_delete=models.PROTECT, related_name="+")
    agent_id = models.BigIntegerField(null=True)
    agent_name = models.CharField(max_length=100, blank=True)
    transport = models.CharField(max_length=8)  # ws | http
    protocol_era = models.CharField(max_length=12)  # handshake (≤2025-11-25) | stateless
    protocol_version = models.CharField(max_length=16, blank=True)
    request_id = models.CharField(max_length=200, blank=True)
    tool = models.CharField(max_length=300)
    arguments = models.JSONField(null=True)
    decision = models.CharField(max_length=16, choices=Decision.choices)
    reason = models.CharField(max_length=500, blank=True)
    rule_id = models.BigIntegerField(null=True)  # the rule that fired; null: the default deny
    # Shadow rules that held and the decision they would make: {"rules", "effect", "rule"}.
    shadow = models.JSONField(default=dict, blank=True)
    policy_version = models.PositiveBigIntegerField(null=True)  # the tenant version decided on
    # Each guardrail verdict of this step: {"check", "stage", "action", "verdict", "findings"}.
    guardrails = models.JSONField(default=list, blank=True)
    flagged = models.BooleanField(default=False)  # a guardrail found something
    outcome = models.CharField(max_length=16, choices=Outcome.choices, blank=True)
    error = models.TextField(blank=True)
    result_digest = models.CharField(max_length=64, blank=True)
    latency_us = models.PositiveBigIntegerField(null=True)  # integers hash fastest
    started_at = models.DateTimeField()
    created_at = models.DateTimeField(db_index=True)
    # An admin record: who, what ("governance.rule 12 'deny shell'"), and {field: [old, new]}.
    actor = models.CharField(max_length=150, blank=True)
    subject = models.CharField(max_length=300, blank=True)
    diff = models.JSONField(default=dict, blank=True)

    objects = AuditRecordQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "seq"], name="audit_tenant_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.kind} {self.tool or self.subject} {self.decision} {self.outcome}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyError("audit records are append-only: they cannot be updated")
        if self.seq is None:
            raise AppendOnlyError("records join the chain through audit.chain.chain_append")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise AppendOnlyError("audit records are append-only: they cannot be deleted")


class ChainHead(models.Model):
    """The tenant's latest seq and hash, locked by each append and signed by each commit, so a
    truncated tail shows even before the next checkpoint."""

    tenant = models.OneToOneField(
        "governance.Tenant", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64)
    signed_at = models.CharField(max_length=32, blank=True)  # as signed: chainproof format
    key_id = models.CharField(max_length=16, blank=True)
    signature = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return f"head of tenant {self.tenant_id} at seq {self.seq}"


class Checkpoint(models.Model):
    """A signed statement "the chain of this tenant had this hash at this seq", kept forever
    (retention keeps the one its pruning leaves), and what an export's proof ends on."""

    class Reason(models.TextChoices):
        PERIODIC = "periodic"  # Celery beat, every AUDIT_CHECKPOINT_SECONDS
        RETENTION = "retention"  # the last pruned record: where the remaining chain begins
        MANUAL = "manual"  # manage.py audit_checkpoint

    tenant = models.ForeignKey("governance.Tenant", on_delete=models.PROTECT, related_name="+")
    seq = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=64)
    reason = models.CharField(max_length=10, choices=Reason.choices)
    signed_at = models.CharField(max_length=32)
    key_id = models.CharField(max_length=16)
    signature = models.CharField(max_length=100)

    class Meta:
        indexes = [models.Index(fields=["tenant", "seq"], name="audit_checkpoint_seq")]

    def __str__(self) -> str:
        return f"checkpoint of tenant {self.tenant_id} at seq {self.seq} ({self.reason})"
