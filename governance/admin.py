"""Django admin for governance data. Every change is recorded in the tenant's audit chain (who,
what, the diff) in the same transaction, and every change to what agents may do bumps the
tenant's version so live gateways apply it within GOVERNANCE_POLL_SECONDS. Who may use the
dashboard (memberships) is recorded without a bump; approval requests, alerts and slow checks
are written by the gateway and the services and only shown here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import admin as auth_admin
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Model, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from audit.admin import ReadOnlyAdmin
from governance.models import (
    Agent,
    AgentToken,
    Alert,
    ApprovalRequest,
    GatewayNode,
    Guardrail,
    Membership,
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
    change_record,
    object_snapshot,
    object_subject,
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


# Not what agents may do: who may use the dashboard. Recorded, without a version bump.
_UNVERSIONED: tuple[type[Model], ...] = (Membership,)
# Written elsewhere while the page is open (the version by every change, presence by the
# gateways): saved as the locked row holds them, never as the page loaded them.
_KEPT: dict[type[Model], tuple[str, ...]] = {Tenant: ("version",), Agent: ("last_seen_at",)}


def _versions_bump(model: type[Model], tenant_ids: Iterable[int]) -> None:
    """Bump the version of each tenant whose ``model`` objects changed, unless ``model`` is
    not what agents may do."""
    if issubclass(model, _UNVERSIONED):
        return
    for tenant_id in sorted(set(tenant_ids)):
        tenant_version_bump(tenant_id=tenant_id)


class InlinesRecorded:
    """Inline rows (an agent's tokens, a tenant's or a person's memberships) are objects of
    their own: one record each, in their tenant's chain."""

    def save_formset(self, request, form, formset, change):
        with transaction.atomic():
            ids = [f.instance.pk for f in formset.initial_forms if f.instance.pk is not None]
            stored = formset.model._default_manager.select_for_update().filter(pk__in=ids)
            before = {obj.pk: object_snapshot(obj) for obj in stored}
            removals = removals_prepare(f.instance for f in formset.deleted_forms)
            super().save_formset(request, form, formset, change)  # type: ignore[misc]
            actor = _actor(request)
            tenant_ids = [removal.tenant_id for removal in removals]
            for obj in formset.new_objects:
                change_record(actor=actor, action="created", obj=obj, before=None)
                tenant_ids.append(tenant_id_of(obj))
            for obj, _ in formset.changed_objects:
                if change_record(actor=actor, action="changed", obj=obj, before=before[obj.pk]):
                    tenant_ids.append(tenant_id_of(obj))
            removals_record(removals, actor=actor)
            _versions_bump(formset.model, tenant_ids)


class VersionedAdmin(InlinesRecorded, admin.ModelAdmin):
    """Saves and deletes through the admin count as governance changes: each appends one
    admin record per object to the tenant's audit chain and, when it changes what agents may
    do, bumps the tenant's version, in the transaction of the change (the admin's add,
    change and delete views run in one). A save that changes nothing does neither."""

    def save_model(self, request, obj, form, change):
        with transaction.atomic():
            # Read before the write; recorded in save_related, once the many-to-many fields
            # (an agent's roles) are saved as well.
            form.audit_before = None
            if change:
                stored = type(obj)._default_manager.select_for_update().get(pk=obj.pk)
                form.audit_before = object_snapshot(stored)
                for name in _KEPT.get(type(obj), ()):
                    setattr(obj, name, getattr(stored, name))
            super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        with transaction.atomic():
            form.save_m2m()  # what ModelAdmin.save_related does, with the record in between
            obj = form.instance
            record = change_record(
                actor=_actor(request),
                action="changed" if change else "created",
                obj=obj,
                before=form.audit_before,
            )
            if record is not None:
                _versions_bump(type(obj), [tenant_id_of(obj)])
            for formset in formsets:
                self.save_formset(request, form, formset, change=change)

    def delete_model(self, request, obj):
        with transaction.atomic():
            tenant_id = tenant_id_of(obj)
            removals = removals_prepare([obj])
            super().delete_model(request, obj)
            _versions_bump(type(obj), [tenant_id])
            removals_record(removals, actor=_actor(request))

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            objs = sorted(queryset, key=lambda obj: obj.pk)  # recorded in id order
            tenant_ids = [tenant_id_of(obj) for obj in objs]
            removals = removals_prepare(objs)
            super().delete_queryset(request, queryset)
            _versions_bump(queryset.model, tenant_ids)
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


class MembershipInline(admin.TabularInline):
    """A person's role in a tenant: on the tenant's page (who) and on the person's (where)."""

    model = Membership
    extra = 0
    autocomplete_fields = ["user", "tenant"]
    readonly_fields = ["created_at"]


@admin.register(Tenant)
class TenantAdmin(VersionedAdmin):
    list_display = [
        "slug",
        "name",
        "denial_detail",
        "four_eyes",
        "approval_timeout_seconds",
        "audit_retention_days",
        "version",
        "created_at",
    ]
    list_filter = ["four_eyes", "denial_detail"]
    search_fields = ["slug", "name"]
    readonly_fields = ["version", "created_at"]
    inlines = [MembershipInline]

    def get_inline_instances(self, request, obj=None):
        # The tenant first, then its people: the add page stays the tenant's settings alone.
        return super().get_inline_instances(request, obj) if obj is not None else []

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
        fields = ["tenant", "name", "description", "is_active", "owner", "roles"]

    def clean(self):
        cleaned = super().clean()
        tenant, roles = cleaned.get("tenant"), cleaned.get("roles") or []
        if tenant and any(role.tenant_id != tenant.id for role in roles):
            raise ValidationError({"roles": "an agent holds roles of its own tenant only"})
        return cleaned


@admin.register(Agent)
class AgentAdmin(VersionedAdmin):
    form = AgentAdminForm
    list_display = ["name", "tenant", "is_active", "owner", "last_seen_at", "created_at"]
    list_filter = [
        "tenant",
        "is_active",
        "roles",
        ("owner", admin.RelatedOnlyFieldListFilter),
        "last_seen_at",
    ]
    filter_horizontal = ["roles"]
    autocomplete_fields = ["owner"]
    search_fields = ["name", "description", "owner__username"]
    readonly_fields = ["last_seen_at", "created_at"]  # presence: the gateways write it
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
    list_filter = ["agent__tenant", "revoked_at", "expires_at", "created_at"]
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
    readonly_fields = ["created_at"]


@admin.register(Membership)
class MembershipAdmin(VersionedAdmin):
    """Who may use a tenant's dashboard and API, and in which role. Recorded in the tenant's
    chain; it alters nothing agents may do, so the tenant's version stays."""

    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["tenant", "role"]
    search_fields = ["user__username", "user__email", "tenant__slug", "tenant__name"]
    autocomplete_fields = ["user", "tenant"]

    def get_readonly_fields(self, request, obj=None):
        # A membership is one person in one tenant: another person or tenant is another one.
        return ["user", "tenant", "created_at"] if obj else ["created_at"]


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

    list_display = [
        "call_id",
        "name",
        "stage",
        "mode",
        "status",
        "verdict",
        "score",
        "created_at",
        "tenant",
    ]
    list_filter = ["status", "verdict", "name", "stage", "mode", "tenant"]
    search_fields = ["=call_id", "name"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


def call_records_url(*, tenant_id: int, call_id: Any) -> str:
    """The audit trail's list filtered to one call's records (intent, approval, outcome…)."""
    query = urlencode({"tenant__id__exact": tenant_id, "call_id": call_id})
    return f"{reverse('admin:audit_auditrecord_changelist')}?{query}"


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(NoDeleting, admin.ModelAdmin):
    """Calls held for a reviewer, as the gateway and the reviewers left them. Shown only:
    decisions are made in the dashboard or the API, through ``approval_decide``, so the four
    eyes rule and the audit record apply."""

    list_display = [
        "created_at",
        "tenant",
        "agent_name",
        "tool",
        "status",
        "decided_by_name",
        "expires_at",
        "call_records",
    ]
    list_filter = ["status", "tenant", "created_at"]
    search_fields = ["tool", "agent_name", "=call_id", "=id"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    list_select_related = ["tenant"]
    fieldsets = [
        (None, {"fields": ["id", "tenant", "agent", "agent_name", "tool", "status"]}),
        (
            "The call",
            {
                "fields": [
                    "call_id",
                    "call_records",
                    "shown_arguments",
                    "arguments_digest",
                    "rule_id",
                    "reason",
                    "policy_version",
                ]
            },
        ),
        (
            "Decision",
            {"fields": ["decided_at", "decided_by", "decided_by_name", "comment", "released_at"]},
        ),
        ("Held by", {"fields": ["created_at", "expires_at", "node", "lease_until"]}),
    ]
    readonly_fields = [
        *(f.name for f in ApprovalRequest._meta.fields if f.name != "arguments"),
        "shown_arguments",
        "call_records",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="arguments")
    def shown_arguments(self, approval: ApprovalRequest) -> str:
        return _pre(approval.arguments)

    @admin.display(description="audit records")
    def call_records(self, approval: ApprovalRequest) -> str:
        url = call_records_url(tenant_id=approval.tenant_id, call_id=approval.call_id)
        return format_html('<a href="{}">records of this call</a>', url)


@admin.register(GatewayNode)
class GatewayNodeAdmin(ReadOnlyAdmin):
    """Gateway processes by their heartbeat (``manage.py gateway_nodes``). Shown only: the
    gateways write them, and the recovery of a dead one's calls depends on them."""

    list_display = ["name", "started_at", "seen_at", "calls_since", "dead_at"]
    list_filter = [("dead_at", admin.EmptyFieldListFilter)]
    search_fields = ["name"]
    ordering = ["name", "started_at"]


# --- people ------------------------------------------------------------------------------------
User = get_user_model()


def _users_delete(request: HttpRequest, users: list[Model], delete: Callable[[], None]) -> None:
    """Deleting people deletes their memberships and leaves the agents they were responsible
    for without an owner: each recorded in its tenant's chain, as done with the deletion."""
    with transaction.atomic():
        memberships = []
        for user in users:
            of_user = Membership.objects.filter(user=user).order_by("id")
            memberships.append((object_subject(user), removals_prepare(of_user)))
        subjects = {user.pk: object_subject(user) for user in users}
        owned = Agent.objects.select_for_update().filter(owner__in=users).order_by("id")
        before = [(agent, subjects[agent.owner_id], object_snapshot(agent)) for agent in owned]
        delete()
        actor = _actor(request)
        for subject, removals in memberships:
            removals_record(removals, actor=actor, action=f"deleted with {subject}")
        for agent, owner, snapshot in before:
            agent.refresh_from_db()
            action = f"changed with {owner} deleted"
            change_record(actor=actor, action=action, obj=agent, before=snapshot)
        _versions_bump(Agent, [agent.tenant_id for agent, _, _ in before])


admin.site.unregister(User)


@admin.register(User)
class UserAdmin(InlinesRecorded, auth_admin.UserAdmin):
    """Django's user admin, with the person's roles in tenants; those are recorded in each
    tenant's chain, as is what deleting a person changes there."""

    inlines = [*auth_admin.UserAdmin.inlines, MembershipInline]

    def get_inline_instances(self, request, obj=None):
        # As Django adds a user: a name and a password first, the rest on the next page.
        return super().get_inline_instances(request, obj) if obj is not None else []

    def delete_model(self, request, obj):
        _users_delete(request, [obj], lambda: super(UserAdmin, self).delete_model(request, obj))

    def delete_queryset(self, request, queryset):
        users = list(queryset.order_by("pk"))
        _users_delete(
            request, users, lambda: super(UserAdmin, self).delete_queryset(request, queryset)
        )
