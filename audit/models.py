"""The audit trail: one row per step of a governed call, linked by call_id."""

from __future__ import annotations

from django.db import models


class AuditRecord(models.Model):
    class Kind(models.TextChoices):
        INTENT = "intent"  # the decision, durable before any upstream side effect
        OUTCOME = "outcome"  # what happened, durable before the reply is released
        VERDICT = "verdict"  # a post-hoc (slow) guardrail verdict, written when it arrives

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
    latency_ms = models.FloatField(null=True)
    started_at = models.DateTimeField()
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "-id"], name="audit_tenant_recent")]

    def __str__(self) -> str:
        return f"{self.kind} {self.tool} {self.decision} {self.outcome}"
