"""Who may call what: tenants, their agents and tokens, tool servers and their tool catalog."""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models

# Tool names the agents see are "<server>__<tool>" and must stay valid OpenAI function names.
SERVER_NAME_RE = r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$"
server_name_validator = RegexValidator(
    SERVER_NAME_RE, "Letters, digits and single hyphens only (it prefixes tool names: name__tool)."
)


class Tenant(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200, blank=True)
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


class Grant(models.Model):
    """Allows one agent, or every agent of the tenant (agent empty), the tools matching a glob
    over the namespaced name (``time__*``). The minimal rule the policy engine will replace."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="grants")
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.CASCADE, related_name="grants"
    )
    tool_glob = models.CharField(max_length=200)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        who = self.agent.name if self.agent else "*"
        return f"{self.tenant.slug}: {who} → {self.tool_glob}"
