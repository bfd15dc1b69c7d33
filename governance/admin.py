"""Django admin for governance data. Every save bumps the tenant's version so live gateways
apply the change within GOVERNANCE_POLL_SECONDS."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html

from governance.models import (
    Agent,
    AgentToken,
    Alert,
    Guardrail,
    RateLimit,
    Role,
    Rule,
    SlowCheck,
    Tenant,
    Tool,
    ToolServer,
)
from governance.selectors import policy_explain
from governance.services.agents import token_issue, token_revoke
from governance.services.guardrails import guardrail_defaults_create, guardrail_validate
from governance.services.policy import rule_validate
from governance.services.toolservers import ToolChangedError, tool_approve, tool_pin_diff
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


class NoEditing:
    """For a model admin whose rows are written elsewhere (the upstream, the gateway, a
    task): its change page shows the row and its actions, without Save buttons."""

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = {
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            **(extra_context or {}),
        }
        return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]

    def save_model(self, request, obj, form, change):
        pass  # nothing on the page is editable; never write back a stale copy of the row


class NoDeleting:
    """Records kept for reviewers: not deleted one by one. Their delete permission stays as
    the user's, so deleting their tenant (a cascade the admin checks) still works."""

    def get_actions(self, request):
        actions = super().get_actions(request)  # type: ignore[misc]
        actions.pop("delete_selected", None)
        return actions

    def delete_view(self, request, object_id, extra_context=None):
        raise PermissionDenied

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        extra_context = {"show_delete": False, **(extra_context or {})}
        return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]


def _pre(value: Any) -> str:
    """Pretty JSON (or text) in an escaped <pre>."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)
    return format_html("<pre>{}</pre>", text)


@admin.register(Tenant)
class TenantAdmin(VersionedAdmin):
    list_display = ["slug", "name", "denial_detail", "version", "created_at"]
    search_fields = ["slug", "name"]
    readonly_fields = ["version", "created_at"]

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if not change:
                guardrail_defaults_create(tenant=obj)  # as tenant_create gives them


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
    fields = ["name", "status", "quarantine_reason", "description", "fingerprint", "updated_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False  # the catalog is what the server lists


def _approve(request: HttpRequest, tools) -> tuple[int, list[str]]:
    """Approve each tool as it is now; the count, and the names approved despite findings."""
    approved, flagged = 0, []
    for tool in tools:
        tool = tool_approve(tool=tool, by=request.user.get_username())
        approved += 1
        if tool.findings:
            flagged.append(str(tool))
    return approved, flagged


def _report(admin_: admin.ModelAdmin, request: HttpRequest, approved: int, flagged: list[str]):
    admin_.message_user(request, f"Approved {approved} tool(s).", messages.SUCCESS)
    if flagged:
        admin_.message_user(
            request,
            f"Approved despite injection markers in the description: {', '.join(flagged)}.",
            messages.WARNING,
        )


@admin.register(ToolServer)
class ToolServerAdmin(VersionedAdmin):
    list_display = ["name", "tenant", "transport", "enabled", "quarantined", "catalog_synced_at"]
    list_filter = ["tenant", "transport", "enabled"]
    search_fields = ["name", "command", "url"]
    readonly_fields = ["catalog_synced_at", "created_at"]
    inlines = [ToolInline]
    actions = ["approve_quarantined"]

    def get_queryset(self, request):
        quarantined = Q(tools__status=Tool.Status.QUARANTINED)
        return super().get_queryset(request).annotate(quarantined=Count("tools", quarantined))

    @admin.display(description="quarantined tools", ordering="quarantined")
    def quarantined(self, server: ToolServer) -> int:
        return server.quarantined  # type: ignore[attr-defined]

    @admin.action(description="Approve all quarantined tools", permissions=["change"])
    def approve_quarantined(self, request, queryset):
        tools = Tool.objects.filter(server__in=queryset, status=Tool.Status.QUARANTINED)
        _report(self, request, *_approve(request, tools.order_by("id")))


@admin.register(Tool)
class ToolAdmin(NoEditing, VersionedAdmin):
    """The catalog as the upstream lists it. A tool whose description or schema changed
    since it was approved is quarantined; the page shows what changed, and approving pins
    the version shown."""

    change_form_template = "admin/governance/tool/change_form.html"
    list_display = ["name", "server", "status", "quarantine_reason", "approved_by", "updated_at"]
    list_filter = ["status", "server__tenant", "server"]
    search_fields = ["name", "description"]
    readonly_fields = [*(f.name for f in Tool._meta.fields), "changes", "injection_markers"]
    fieldsets = [
        (None, {"fields": ["server", "name", "status", "quarantine_reason", "title"]}),
        (
            "Review",
            {
                "fields": [
                    "changes",
                    "injection_markers",
                    "approved_at",
                    "approved_by",
                    "pinned_fingerprint",
                    "fingerprint",
                ]
            },
        ),
        (
            "As listed now",
            {"fields": ["description", "input_schema", "output_schema", "annotations"]},
        ),
        (None, {"fields": ["pinned", "discovered_at", "updated_at", "id", "findings"]}),
    ]
    actions = ["approve"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="changes since approved")
    def changes(self, tool: Tool) -> str:
        diff = tool_pin_diff(tool)
        return _pre(diff) if diff else "none: this is the approved version"

    @admin.display(description="injection markers")
    def injection_markers(self, tool: Tool) -> str:
        return _pre(tool.findings) if tool.findings else "none found"

    @admin.action(description="Approve the current version", permissions=["change"])
    def approve(self, request, queryset):
        _report(self, request, *_approve(request, queryset.order_by("id")))

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST" and object_id and "_approve" in request.POST:
            return self.approve_shown(request, object_id)
        tool = self.get_object(request, object_id) if object_id else None
        can_approve = bool(tool) and (
            tool.status != Tool.Status.APPROVED or tool.fingerprint != tool.pinned_fingerprint
        )
        extra_context = {"can_approve": can_approve, **(extra_context or {})}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def approve_shown(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The change page's button: approve the version the reviewer was shown, only."""
        tool = self.get_object(request, object_id)
        if tool is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_change_permission(request, tool):
            raise PermissionDenied
        try:
            tool = tool_approve(
                tool=tool,
                by=request.user.get_username(),
                fingerprint=request.POST.get("_fingerprint", ""),
            )
        except ToolChangedError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            _report(self, request, 1, [str(tool)] if tool.findings else [])
        return HttpResponseRedirect(request.path)


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


class GuardrailAdminForm(forms.ModelForm):
    class Meta:
        model = Guardrail
        fields = [
            "tenant",
            "name",
            "enabled",
            "description",
            "agent",
            "tool",
            "stage",
            "action",
            "failure_mode",
            "mode",
            "timeout_seconds",
            "config",
        ]

    def clean_config(self):
        config = self.cleaned_data["config"]
        return {} if config is None else config  # an empty box: the check's defaults

    def _post_clean(self) -> None:
        super()._post_clean()
        if not self.errors:
            try:
                guardrail_validate(self.instance)
            except ValidationError as exc:
                self._update_errors(exc)


@admin.register(Guardrail)
class GuardrailAdmin(VersionedAdmin):
    form = GuardrailAdminForm
    list_display = ["name", "scope", "stage", "action", "failure_mode", "enabled", "tenant"]
    list_display_links = ["name", "scope"]
    list_filter = ["tenant", "name", "stage", "action", "failure_mode", "mode", "enabled"]
    search_fields = ["tool", "description", "agent__name"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "enabled", "description"]}),
        (
            "Applies to",
            {"fields": ["agent", "tool"], "description": "Neither: the tenant's setting."},
        ),
        (
            "What it does",
            {"fields": ["stage", "action", "failure_mode", "mode", "timeout_seconds", "config"]},
        ),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="applies to")
    def scope(self, guardrail: Guardrail) -> str:
        parts = [f"agent {guardrail.agent.name}"] if guardrail.agent else []
        parts += [f"tools {guardrail.tool}"] if guardrail.tool else []
        return ", ".join(parts) or "tenant"


class RateLimitAdminForm(forms.ModelForm):
    class Meta:
        model = RateLimit
        fields = [
            "tenant",
            "scope",
            "agent",
            "tool",
            "calls",
            "window_seconds",
            "concurrent",
            "enabled",
            "description",
        ]

    def clean(self):
        cleaned = super().clean()
        tenant, agent = cleaned.get("tenant"), cleaned.get("agent")
        if tenant and agent and agent.tenant_id != tenant.id:
            self.add_error("agent", "an agent of the same tenant")
        return cleaned  # the model's constraints say what a limit needs


@admin.register(RateLimit)
class RateLimitAdmin(VersionedAdmin):
    form = RateLimitAdminForm
    list_display = ["__str__", "scope", "agent", "tool", "enabled", "description", "tenant"]
    list_filter = ["tenant", "scope", "enabled"]
    search_fields = ["tool", "description", "agent__name"]
    readonly_fields = ["created_at"]


class ResolvedFilter(admin.SimpleListFilter):
    title = "resolved"
    parameter_name = "resolved"

    def lookups(self, request, model_admin):
        return [("no", "open"), ("yes", "resolved")]

    def queryset(self, request, queryset):
        if self.value() in ("no", "yes"):
            return queryset.filter(resolved_at__isnull=self.value() == "no")
        return queryset


@admin.register(Alert)
class AlertAdmin(NoEditing, NoDeleting, admin.ModelAdmin):
    list_display = ["title", "kind", "created_at", "resolved_at", "resolved_by", "tenant"]
    list_filter = ["kind", ResolvedFilter, "tenant"]
    search_fields = ["title"]
    date_hierarchy = "created_at"
    fields = [
        "tenant",
        "kind",
        "title",
        "tool",
        "call_id",
        "created_at",
        "resolved_at",
        "resolved_by",
        "changes",
        "details",
    ]
    readonly_fields = fields
    actions = ["mark_resolved"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="changes since approved")
    def changes(self, alert: Alert) -> str:
        diff = alert.detail.get("diff") if isinstance(alert.detail, dict) else None
        return _pre(diff) if diff else "-"

    @admin.display(description="detail")
    def details(self, alert: Alert) -> str:
        detail = alert.detail
        if isinstance(detail, dict):
            detail = {key: value for key, value in detail.items() if key != "diff"}
        return _pre(detail)

    @admin.action(description="Mark resolved", permissions=["change"])
    def mark_resolved(self, request, queryset):
        # Bookkeeping for reviewers only: no governance state changes, no version bump.
        count = queryset.filter(resolved_at__isnull=True).update(
            resolved_at=timezone.now(), resolved_by=request.user.get_username()
        )
        self.message_user(request, f"Marked {count} alert(s) resolved.", messages.SUCCESS)


@admin.register(SlowCheck)
class SlowCheckAdmin(NoDeleting, admin.ModelAdmin):
    """Slow (Celery) checks and their verdicts: written by the gateway and the workers."""

    list_display = ["call_id", "name", "stage", "mode", "status", "verdict", "score", "created_at"]
    list_filter = ["status", "verdict", "name", "stage", "mode", "tenant"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
