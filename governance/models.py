"""Who may call what: tenants, their agents and tokens, tool servers and their tool catalog,
roles and permission rules."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

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
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug


class Agent(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    is_active = models.BooleanField(default=True)
    roles = models.ManyToManyField("Role", blank=True, related_name="agents")
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
