"""Django admin for governance data. Every save bumps the tenant's version so live gateways
apply the change within GOVERNANCE_POLL_SECONDS, and is recorded in the tenant's audit chain
(who, what, the diff) in the same transaction."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Model, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
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
from governance.services.changes import (
    Snapshot,
    change_record,
    object_snapshot,
    removals_prepare,
    removals_record,
    tenant_id_of,
)
from governance.services.guardrails import guardrail_defaults_create, guardrail_validate
from governance.services.policy import rule_validate
from governance.services.toolservers import (
    ToolChangedError,
    alerts_resolve,
    tool_approve,
    tool_pin_diff,
)
from governance.services.versions import tenant_version_bump


def _actor(request: HttpRequest) -> str:
    return request.user.get_username()


def _stored(obj: Model) -> Snapshot:
    """The row as the database holds it: the form has already changed ``obj`` in memory."""
    return object_snapshot(type(obj)._default_manager.select_for_update().get(pk=obj.pk))


class VersionedAdmin(admin.ModelAdmin):
    """Saves and deletes through the admin count as governance changes: each bumps the
    tenant's version and appends one admin record per object to the tenant's audit chain, in
    the transaction of the change (the admin's add, change and delete views run in one)."""

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            # Read before the write; recorded in save_related, once the many-to-many fields
            # (an agent's roles) are saved as well.
            form.audit_before = _stored(obj) if change else None
            super().save_model(request, obj, form, change)
            tenant_version_bump(tenant_id=tenant_id_of(obj))

    def save_related(self, request, form, formsets, change):
        with transaction.atomic():
            form.save_m2m()  # what ModelAdmin.save_related does, with the record in between
            change_record(
                actor=_actor(request),
                action="changed" if change else "created",
                obj=form.instance,
                before=form.audit_before,
            )
            for formset in formsets:
                self.save_formset(request, form, formset, change=change)

    def save_formset(self, request, form, formset, change):
        # Inline rows (an agent's tokens) are objects of their own: one record each.
        with transaction.atomic():
            ids = [f.instance.pk for f in formset.initial_forms if f.instance.pk is not None]
            stored = formset.model._default_manager.select_for_update().filter(pk__in=ids)
            before = {obj.pk: object_snapshot(obj) for obj in stored}
            removals = removals_prepare(f.instance for f in formset.deleted_forms)
            super().save_formset(request, form, formset, change)
            actor = _actor(request)
            for obj in formset.new_objects:
                change_record(actor=actor, action="created", obj=obj, before=None)
            for obj, _ in formset.changed_objects:
                change_record(actor=actor, action="changed", obj=obj, before=before[obj.pk])
            removals_record(removals, actor=actor)

    def delete_model(self, request, obj):
        with transaction.atomic():
            tenant_id = tenant_id_of(obj)
            removals = removals_prepare([obj])
            super().delete_model(request, obj)
            tenant_version_bump(tenant_id=tenant_id)
            removals_record(removals, actor=_actor(request))

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            objs = sorted(queryset, key=lambda obj: obj.pk)  # recorded in id order
            tenant_ids = {tenant_id_of(obj) for obj in objs}
            removals = removals_prepare(objs)
            super().delete_queryset(request, queryset)
            for tenant_id in sorted(tenant_ids):
                tenant_version_bump(tenant_id=tenant_id)
            removals_record(removals, actor=_actor(request))


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

    def save_related(self, request, form, formsets, change):
        pass  # nor of its relations: nothing was saved, nothing is recorded


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

    def save_related(self, request, form, formsets, change):
        with transaction.atomic():
            super().save_related(request, form, formsets, change)
            if not change:  # as tenant_create gives them, recorded after the tenant
                guardrail_defaults_create(tenant=form.instance, actor=_actor(request))


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
            issued = token_issue(agent=agent, actor=_actor(request))
            self.message_user(
                request,
                f"Token for {agent}: {issued.token} — copy it now, it is not stored.",
                messages.WARNING,
            )


@admin.register(AgentToken)
class AgentTokenAdmin(VersionedAdmin):
    list_display = ["prefix", "agent", "created_at", "expires_at", "revoked_at"]
    list_filter = ["agent__tenant", "revoked_at"]
    search_fields = ["prefix", "agent__name"]
    readonly_fields = ["agent", "prefix", "created_at", "revoked_at"]
    fields = ["agent", "prefix", "created_at", "expires_at", "revoked_at"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # tokens are issued from the agent page, where the secret is shown once

    @admin.action(description="Revoke (closes live connections)")
    def revoke(self, request, queryset):
        for token in queryset.select_related("agent"):
            token_revoke(token=token, actor=_actor(request))


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
        tool = tool_approve(tool=tool, actor=_actor(request))
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
                actor=_actor(request),
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
        count = alerts_resolve(alerts=queryset, actor=_actor(request))
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
