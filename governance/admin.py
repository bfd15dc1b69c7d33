"""Django admin for governance data. Every save bumps the tenant's version so live gateways
apply the change within GOVERNANCE_POLL_SECONDS."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from governance.models import Agent, AgentToken, Role, Rule, Tenant, Tool, ToolServer
from governance.selectors import policy_explain
from governance.services.agents import token_issue, token_revoke
from governance.services.policy import rule_validate
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
class TenantAdmin(VersionedAdmin):
    list_display = ["slug", "name", "denial_detail", "version", "created_at"]
    search_fields = ["slug", "name"]
    readonly_fields = ["version", "created_at"]


class TokenInline(admin.TabularInline):
    model = AgentToken
    extra = 0
    fields = ["prefix", "created_at", "expires_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "revoked_at"]
    can_delete = False


class AgentAdminForm(forms.ModelForm):
    class Meta:
        model = Agent
        fields = ["tenant", "name", "description", "is_active", "roles"]

    def clean(self):
        cleaned = super().clean()
        tenant, roles = cleaned.get("tenant"), cleaned.get("roles") or []
        if tenant and any(role.tenant_id != tenant.id for role in roles):
            raise ValidationError({"roles": "an agent holds roles of its own tenant only"})
        return cleaned


@admin.register(Agent)
class AgentAdmin(VersionedAdmin):
    form = AgentAdminForm
    list_display = ["name", "tenant", "is_active", "created_at"]
    list_filter = ["tenant", "is_active", "roles"]
    filter_horizontal = ["roles"]
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


@admin.register(Role)
class RoleAdmin(VersionedAdmin):
    list_display = ["name", "tenant", "description", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "description"]


class RuleAdminForm(forms.ModelForm):
    class Meta:
        model = Rule
        fields = [
            "tenant",
            "effect",
            "resource_kind",
            "resource",
            "description",
            "role",
            "agent",
            "conditions",
            "valid_from",
            "valid_until",
            "shadow",
        ]

    def clean_conditions(self):
        return self.cleaned_data["conditions"] or []  # an empty box: no conditions

    def _post_clean(self) -> None:
        super()._post_clean()
        if not self.errors:
            try:
                rule_validate(rule=self.instance)
            except ValidationError as exc:
                self._update_errors(exc)


@admin.register(Rule)
class RuleAdmin(VersionedAdmin):
    form = RuleAdminForm
    change_list_template = "admin/governance/rule/change_list.html"
    list_display = ["id", "effect", "resource", "target", "shadow", "description", "tenant"]
    list_display_links = ["id", "effect"]
    list_filter = ["tenant", "effect", "resource_kind", "shadow", "role"]
    search_fields = ["resource", "description", "agent__name", "role__name"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["tenant", "effect", "resource_kind", "resource", "description"]}),
        ("Who", {"fields": ["role", "agent"], "description": "Neither: every agent."}),
        ("When", {"fields": ["conditions", "valid_from", "valid_until", "shadow"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="for")
    def target(self, rule: Rule) -> str:
        return rule.agent.name if rule.agent else f"role {rule.role.name}" if rule.role else "*"

    def get_urls(self):
        try_it = self.admin_site.admin_view(self.try_it)
        return [path("try/", try_it, name="governance_rule_try"), *super().get_urls()]

    def try_it(self, request: HttpRequest) -> HttpResponse:
        """Ask the engine what it decides for a call, and why, without making the call."""
        form = PolicyTryForm(request.POST or None)
        explanation = None
        if request.method == "POST" and form.is_valid():
            agent = form.cleaned_data["agent"]
            explanation = policy_explain(
                tenant=agent.tenant,
                agent=agent,
                name=form.cleaned_data["tool"],
                arguments=form.cleaned_data["arguments"],
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Try the policy",
            "form": form,
            "explanation": explanation,
        }
        return TemplateResponse(request, "admin/governance/rule/try_it.html", context)


class PolicyTryForm(forms.Form):
    agent = forms.ModelChoiceField(
        Agent.objects.select_related("tenant").order_by("tenant", "name")
    )
    tool = forms.CharField(max_length=300, help_text="As the agent sees it: server__tool.")
    arguments = forms.JSONField(initial=dict, required=False, help_text="A JSON object.")

    def clean_arguments(self):
        arguments = self.cleaned_data["arguments"]
        if arguments is None:
            return {}
        if not isinstance(arguments, dict):
            raise ValidationError("tool arguments are a JSON object")
        return arguments
