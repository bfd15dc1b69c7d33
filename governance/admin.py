"""Django admin for governance data. Every save bumps the tenant's version so live gateways
apply the change within GOVERNANCE_POLL_SECONDS."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import transaction

from governance.models import Agent, AgentToken, Grant, Tenant, Tool, ToolServer
from governance.services.agents import token_issue, token_revoke
from governance.services.versions import tenant_version_bump


def _tenant_id(obj) -> int:
    if isinstance(obj, Tenant):
        return obj.id
    if isinstance(obj, AgentToken):
        return obj.agent.tenant_id
    if isinstance(obj, Tool):
        return obj.server.tenant_id
    return obj.tenant_id


class VersionedAdmin(admin.ModelAdmin):
    """Saves and deletes through the admin count as governance changes."""

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            tenant_version_bump(tenant_id=_tenant_id(obj))

    def delete_model(self, request, obj):
        with transaction.atomic():
            tenant_id = _tenant_id(obj)
            super().delete_model(request, obj)
            tenant_version_bump(tenant_id=tenant_id)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            tenant_ids = {_tenant_id(obj) for obj in queryset}
            super().delete_queryset(request, queryset)
            for tenant_id in tenant_ids:
                tenant_version_bump(tenant_id=tenant_id)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "version", "created_at"]
    search_fields = ["slug", "name"]
    readonly_fields = ["version", "created_at"]


class TokenInline(admin.TabularInline):
    model = AgentToken
    extra = 0
    fields = ["prefix", "created_at", "expires_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "revoked_at"]
    can_delete = False


@admin.register(Agent)
class AgentAdmin(VersionedAdmin):
    list_display = ["name", "tenant", "is_active", "created_at"]
    list_filter = ["tenant", "is_active"]
    search_fields = ["name", "description"]
    inlines = [TokenInline]
    actions = ["issue_token"]

    @admin.action(description="Issue a new token (shown once)")
    def issue_token(self, request, queryset):
        for agent in queryset:
            issued = token_issue(agent=agent)
            self.message_user(
                request,
                f"Token for {agent}: {issued.token} — copy it now, it is not stored.",
                messages.WARNING,
            )


@admin.register(AgentToken)
class AgentTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "agent", "created_at", "expires_at", "revoked_at"]
    list_filter = ["agent__tenant", "revoked_at"]
    search_fields = ["prefix", "agent__name"]
    readonly_fields = ["agent", "prefix", "created_at", "revoked_at"]
    fields = ["agent", "prefix", "created_at", "expires_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # tokens are issued from the agent page, where the secret is shown once

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            tenant_version_bump(tenant_id=obj.agent.tenant_id)

    @admin.action(description="Revoke (closes live connections)")
    def revoke(self, request, queryset):
        for token in queryset.select_related("agent"):
            token_revoke(token=token)


class ToolInline(admin.TabularInline):
    model = Tool
    extra = 0
    fields = ["name", "description", "fingerprint", "updated_at"]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False  # the catalog is what the server lists


@admin.register(ToolServer)
class ToolServerAdmin(VersionedAdmin):
    list_display = ["name", "tenant", "transport", "enabled", "catalog_synced_at"]
    list_filter = ["tenant", "transport", "enabled"]
    search_fields = ["name", "command", "url"]
    readonly_fields = ["catalog_synced_at", "created_at"]
    inlines = [ToolInline]


@admin.register(Tool)
class ToolAdmin(admin.ModelAdmin):
    list_display = ["name", "server", "fingerprint", "updated_at"]
    list_filter = ["server__tenant", "server"]
    search_fields = ["name", "description"]
    readonly_fields = [f.name for f in Tool._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(Grant)
class GrantAdmin(VersionedAdmin):
    list_display = ["tool_glob", "agent", "tenant", "description", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["tool_glob", "description"]
