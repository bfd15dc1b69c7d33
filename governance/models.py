"""Who may call what: tenants, their agents and tokens, tool servers and their tool catalog,
roles and permission rules."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

# Tool names the agents see are "<server>__<tool>" and must stay valid OpenAI function names.
SERVER_NAME_RE = r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$"
server_name_validator = RegexValidator(
    SERVER_NAME_RE, "Letters, digits and single hyphens only (it prefixes tool names: name__tool)."
)


class Tenant(models.Model):
    class DenialDetail(models.TextChoices):
        MINIMAL = "minimal", "minimal: just 'permission denied'"
        RULE = "rule", "rule: the rule that decided and its description"
        FULL = "full", "full: also each condition and the values it saw"

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200, blank=True)
    denial_detail = models.CharField(
        max_length=8,
        choices=DenialDetail.choices,
        default=DenialDetail.RULE,
        help_text="How much a denied agent is told about why.",
    )
    # Bumped by every change that alters what this tenant's agents may do. Each gateway process
    # polls it and reloads its in-memory view: the database, not a message, is the truth.
    version = models.PositiveBigIntegerField(default=1)
    audit_retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Audit records older than this many days are pruned (a signed checkpoint "
        "keeps the rest verifiable). Empty: keep them forever.",
    )
    four_eyes = models.BooleanField(
        "four eyes",
        default=True,
        help_text="The person responsible for an agent cannot approve that agent's requests.",
    )
    approval_timeout_seconds = models.PositiveIntegerField(
        default=900,
        validators=[MinValueValidator(1)],
        help_text="A call waiting for approval is denied (expired) after this many seconds.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    """A person's role in a tenant's dashboard. Reviewers watch, search and decide approvals;
    admins also revoke tokens and resolve alerts. Superusers act as admins of every tenant."""

    class Role(models.TextChoices):
        REVIEWER = "reviewer"
        ADMIN = "admin"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.REVIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.role} of {self.tenant}"


class Agent(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    roles = models.ManyToManyField("Role", blank=True, related_name="agents")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_agents",
        help_text="The person responsible for this agent. Under four eyes they cannot approve "
        "its requests.",
    )
    # Written by the gateways while the agent is connected or calling: presence, not governance.
    last_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="agent_unique_name")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class AgentToken(models.Model):
    """An API token. Only its SHA-256 digest is stored; the token itself is shown once."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tokens")
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.agent})"


class ToolServer(models.Model):
    class Transport(models.TextChoices):
        STDIO = "stdio", "stdio (local command)"
        HTTP = "http", "streamable HTTP"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="tool_servers")
    name = models.CharField(max_length=64, validators=[server_name_validator])
    transport = models.CharField(max_length=8, choices=Transport.choices)
    command = models.CharField(max_length=500, blank=True)
    args = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True)
    url = models.URLField(max_length=500, blank=True)
    headers = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    catalog_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="toolserver_unique_name"),
            models.CheckConstraint(
                condition=(models.Q(transport="stdio") & ~models.Q(command=""))
                | (models.Q(transport="http") & ~models.Q(url="")),
                name="toolserver_has_endpoint",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class Tool(models.Model):
    """A tool as its server last described it. The fingerprint covers name, description and
    schemas, so a changed description is a changed fingerprint."""

    class Status(models.TextChoices):
        APPROVED = "approved"
        QUARANTINED = "quarantined", "quarantined: hidden and refused until approved"

    server = models.ForeignKey(ToolServer, on_delete=models.CASCADE, related_name="tools")
    name = models.CharField(max_length=200)
    title = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict)
    output_schema = models.JSONField(null=True, blank=True)
    annotations = models.JSONField(null=True, blank=True)
    fingerprint = models.CharField(max_length=64)
    discovered_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Rug-pull pinning: what an admin approved. Agents see and call only an approved tool,
    # whose fingerprint equals the pinned one; any change quarantines it until re-approved.
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUARANTINED)
    pinned = models.JSONField(
        null=True, blank=True, help_text="The approved name, description and schemas."
    )
    pinned_fingerprint = models.CharField(max_length=64, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=150, blank=True)
    quarantine_reason = models.CharField(max_length=300, blank=True)
    # Injection markers found in the description when it was last scanned (approval or sync).
    findings = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["server", "name"], name="tool_unique_name")]

    def __str__(self) -> str:
        return f"{self.server.name}__{self.name}"


class Role(models.Model):
    """A named bundle of rules that agents hold (``developer``, ``release-bot``)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="roles")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="role_unique_name")]

    def __str__(self) -> str:
        return f"{self.tenant.slug}/{self.name}"


class Rule(models.Model):
    """One permission rule (docs/policy.md). It belongs to a role, targets one agent, or —
    with neither — applies to every agent of the tenant."""

    class Effect(models.TextChoices):
        ALLOW = "allow"
        DENY = "deny"
        REQUIRE_APPROVAL = "require_approval", "require approval"

    class ResourceKind(models.TextChoices):
        TOOL = "tool"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rules")
    role = models.ForeignKey(
        Role, null=True, blank=True, on_delete=models.CASCADE, related_name="rules"
    )
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="rules"
    )
    effect = models.CharField(max_length=16, choices=Effect.choices)
    resource_kind = models.CharField(
        max_length=16, choices=ResourceKind.choices, default=ResourceKind.TOOL
    )
    resource = models.CharField(
        max_length=200,
        help_text="A glob over the name: <code>git__*</code>, <code>*__delete_*</code>. "
        "<code>*</code> is any run of characters, <code>?</code> one character.",
    )
    conditions = models.JSONField(
        default=list,
        blank=True,
        help_text="All must hold. A list of "
        '<code>{"path": "$.repo_path", "op": "path_under", "value": "/srv/repos"}</code>; '
        "ops: equals, in, prefix, glob, regex, range, host_in, path_under; "
        '<code>"negate": true</code> inverts one. See docs/policy.md.',
    )
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True)
    shadow = models.BooleanField(
        default=False, help_text="Evaluated and recorded in the audit trail, never enforced."
    )
    description = models.CharField(
        max_length=300, blank=True, help_text="Shown to reviewers, and to denied agents."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__isnull=True) | models.Q(agent__isnull=True),
                name="rule_one_target",
            )
        ]

    def __str__(self) -> str:
        target = self.agent.name if self.agent else f"role {self.role.name}" if self.role else "*"
        shadow = " (shadow)" if self.shadow else ""
        return f"#{self.pk} {self.effect} {self.resource} for {target}{shadow}"


class Guardrail(models.Model):
    """One check of the guardrail pipeline (docs/guardrails.md), named by ``name``. A row
    with neither ``agent`` nor ``tool`` is the tenant's setting; a row with either overrides
    it for the calls it matches. For a call, each check's most specific matching row decides
    (agent and tool, then agent, then tool, then the tenant), its ``config`` laid over the
    less specific ones'."""

    class Check(models.TextChoices):
        SCHEMA = "schema", "schema: arguments against the tool's pinned JSON Schema"
        SIZE = "size", "size: bytes, nesting depth and item counts"
        PII = "pii", "pii: emails, phones, cards, IBANs, national ids, IP addresses"
        SECRETS = "secrets", "secrets: cloud keys, tokens, private keys, high entropy"
        INJECTION = "injection", "injection: override phrases, hidden Unicode, exfil images"
        DENY_PATTERNS = "deny_patterns", "deny patterns: the tenant's own RE2 patterns"
        INJECTION_SIMILARITY = (
            "injection_similarity",
            "injection similarity (slow, Celery): embedding model vs a known corpus",
        )

    class Stage(models.TextChoices):
        INPUT = "input", "input: the call's arguments"
        OUTPUT = "output", "output: the tool's result"
        BOTH = "both"

    class Action(models.TextChoices):
        BLOCK = "block", "block: refuse the call (input) or withhold the result (output)"
        REDACT = "redact", "redact: replace what was found, then go on"
        FLAG = "flag", "flag: record it in the audit trail, change nothing"

    class FailureMode(models.TextChoices):
        CLOSED = "closed", "fail closed: a check that errs or times out blocks"
        OPEN = "open", "fail open: a check that errs or times out lets the call through"

    class Mode(models.TextChoices):
        BLOCKING = "blocking", "blocking: the call waits for the verdict (up to the timeout)"
        POST_HOC = "post_hoc", "post-hoc: the call goes on; the verdict flags it afterwards"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="guardrails")
    name = models.CharField("check", max_length=32, choices=Check.choices)
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="guardrails",
        help_text="Override for this agent only.",
    )
    tool = models.CharField(
        max_length=200,
        blank=True,
        help_text="Override for the tools this glob matches (<code>git__*</code>).",
    )
    enabled = models.BooleanField(default=True)
    stage = models.CharField(max_length=8, choices=Stage.choices, default=Stage.BOTH)
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.BLOCK)
    failure_mode = models.CharField(
        max_length=8, choices=FailureMode.choices, default=FailureMode.CLOSED
    )
    mode = models.CharField(
        max_length=8,
        choices=Mode.choices,
        default=Mode.BLOCKING,
        help_text="Slow (Celery) checks only; inline checks always run in the call.",
    )
    timeout_seconds = models.FloatField(
        default=2.0, help_text="Slow checks only: how long a blocking call waits."
    )
    config = models.JSONField(default=dict, blank=True, help_text="See docs/guardrails.md.")
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        scope = "/".join(s for s in (self.agent.name if self.agent else "", self.tool) if s)
        return f"{self.name} ({scope or 'tenant'})"


class RateLimit(models.Model):
    """Calls per window and calls at once, counted per ``scope``. ``agent`` and ``tool``
    narrow which calls it counts: scope agent with no filter is "each agent may make N
    calls a minute"; scope tool with ``tool=git__commit`` is "git__commit, N a minute, for
    the whole tenant"."""

    class Scope(models.TextChoices):
        TENANT = "tenant", "tenant: one counter for all matching calls"
        AGENT = "agent", "agent: one counter per agent"
        TOOL = "tool", "tool: one counter per tool"
        AGENT_TOOL = "agent_tool", "agent and tool: one counter per agent per tool"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rate_limits")
    scope = models.CharField(max_length=12, choices=Scope.choices, default=Scope.AGENT)
    agent = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="rate_limits",
        help_text="Count only this agent's calls.",
    )
    tool = models.CharField(
        max_length=200, blank=True, help_text="Count only calls of tools this glob matches."
    )
    calls = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many calls per window."
    )
    window_seconds = models.PositiveIntegerField(null=True, blank=True)
    concurrent = models.PositiveIntegerField(
        null=True, blank=True, help_text="At most this many calls in flight at once."
    )
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Explicit IS NOT NULL: a CHECK lets a NULL comparison through.
            models.CheckConstraint(
                condition=models.Q(calls__isnull=True, window_seconds__isnull=True)
                | models.Q(
                    calls__isnull=False,
                    window_seconds__isnull=False,
                    calls__gt=0,
                    window_seconds__gt=0,
                ),
                name="ratelimit_calls_with_window",
                violation_error_message="calls per window: give both calls and window seconds "
                "(above 0), or neither",
            ),
            models.CheckConstraint(
                condition=models.Q(calls__isnull=False)
                | models.Q(concurrent__isnull=False, concurrent__gt=0),
                name="ratelimit_limits_something",
                violation_error_message="limit something: calls per window, or calls at once",
            ),
        ]

    def __str__(self) -> str:
        parts = []
        if self.calls:
            parts.append(f"{self.calls}/{self.window_seconds}s")
        if self.concurrent:
            parts.append(f"{self.concurrent} at once")
        return f"{' and '.join(parts)} per {self.scope}"


class Alert(models.Model):
    """Something a reviewer should look at: a quarantined tool, a slow check's flag."""

    class Kind(models.TextChoices):
        TOOL_QUARANTINED = "tool_quarantined", "tool quarantined"
        GUARDRAIL_FLAGGED = "guardrail_flagged", "guardrail flagged a call"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    title = models.CharField(max_length=300)
    detail = models.JSONField(default=dict, blank=True)
    call_id = models.UUIDField(null=True, blank=True, db_index=True)
    tool = models.ForeignKey(
        "Tool", null=True, blank=True, on_delete=models.SET_NULL, related_name="alerts"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True)

    def __str__(self) -> str:
        return self.title


class SlowCheck(models.Model):
    """One slow (Celery) check of one call's input or output, and its verdict. The row is
    the truth: the task is idempotent on it, and a sweep re-sends rows left pending."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DONE = "done"

    class Verdict(models.TextChoices):
        PASS = "pass"  # noqa: S105 - a verdict
        FLAG = "flag"  # the check found something
        ERROR = "error"  # the check itself failed (or gave up after its attempts)

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="slow_checks")
    call_id = models.UUIDField()
    guardrail = models.ForeignKey(
        Guardrail, null=True, on_delete=models.SET_NULL, related_name="slow_checks"
    )
    name = models.CharField("check", max_length=32)
    stage = models.CharField(max_length=8)  # input | output
    mode = models.CharField(max_length=8)  # blocking | post_hoc
    action = models.CharField(max_length=8)  # what a flag means: block | redact | flag
    payload = models.JSONField()
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    verdict = models.CharField(max_length=8, choices=Verdict.choices, blank=True)
    score = models.FloatField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["call_id", "name", "stage"], name="slowcheck_once_per_call"
            )
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="slowcheck_pending")]

    def __str__(self) -> str:
        return f"{self.name} {self.stage} {self.call_id}: {self.verdict or self.status}"


class ApprovalRequest(models.Model):
    """A call held for a reviewer's decision, bound to exactly that call: its tenant, agent,
    tool, the digest of its canonical arguments and the policy version that asked for it.
    The row is the truth: the gateway holding the call reads the decision from here."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"
        EXPIRED = "expired"  # nobody decided in time: a denial
        CANCELLED = "cancelled"  # the agent cancelled the call or disconnected
        INTERRUPTED = "interrupted"  # the gateway holding the call stopped or died

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="approvals")
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="approvals")
    agent_name = models.CharField(max_length=100)
    call_id = models.UUIDField(unique=True)
    tool = models.CharField(max_length=300)
    # What the reviewer sees: the arguments as the audit trail keeps them (redactions applied).
    arguments = models.JSONField(default=dict)
    # SHA-256 of the canonical JSON (RFC 8785) of the arguments that would go upstream.
    arguments_digest = models.CharField(max_length=64)
    rule_id = models.BigIntegerField(null=True)
    reason = models.CharField(max_length=500, blank=True)
    policy_version = models.PositiveBigIntegerField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    # The gateway process holding the call, and until when it vouches it still does.
    node = models.CharField(max_length=200)
    lease_until = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="approval_decisions",
    )
    decided_by_name = models.CharField(max_length=150, blank=True)  # or "gateway"
    comment = models.TextField(blank=True)
    # When the approved call was released upstream: an approval is used once.
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "status", "created_at"], name="approval_queue"),
            models.Index(fields=["status", "lease_until"], name="approval_lease"),
        ]

    def __str__(self) -> str:
        return f"{self.tool} for {self.agent_name}: {self.status}"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING


class GatewayNode(models.Model):
    """One run of a gateway process, known by its heartbeat.

    A call's intent is durable before it goes upstream; a process that dies leaves intents
    without an outcome. They are found by time, so the trail needs no column for the node:
    every call a process has not finished began at or after its ``calls_since``, so an
    intent older than every live process's ``calls_since`` is held by none of them.
    """

    id = models.UUIDField(primary_key=True)  # one per process start
    name = models.CharField(max_length=200)  # GATEWAY_NODE (by default host:port)
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField()  # its latest heartbeat
    calls_since = models.DateTimeField()  # every call it has not finished began at or after
    # When it was found dead (silent past NODE_LEASE_SECONDS, or replaced by a process of the
    # same name); kept until the calls it left are all recorded as interrupted.
    dead_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} ({'dead' if self.dead_at else 'live'})"
