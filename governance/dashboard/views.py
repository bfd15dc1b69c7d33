"""The dashboard's pages: parse the request, call a selector or a service, render.

Every page but the tenant list is under ``/dashboard/<slug>/`` and goes through
``tenant_page``: anonymous visitors are sent to the login page, and anyone who is not a member
of the tenant is told it does not exist (404), exactly as for a tenant that does not. Ids
from the URL (approval, token, alert, call) are looked up within the tenant only, so another
tenant's id is a 404 too. The live stream is in ``stream.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, Concatenate, ParamSpec
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from governance.dashboard.forms import FILTER_FIELDS, AuditFilterForm, DecisionForm
from governance.dashboard.selectors import (
    PAGE_SIZE,
    ApprovalRow,
    agent_rows,
    alert_get,
    alert_list,
    approval_queue,
    audit_page,
    call_story,
    chain_head_seq,
    feed_list,
    filter_choices,
    guardrail_hits,
    pending_count,
    quarantined_tools,
    token_get,
)
from governance.dashboard.stats import overview as overview_stats
from governance.models import Membership
from governance.selectors import Access, approval_get, member_tenants, tenant_access
from governance.services.agents import token_revoke as token_revoke_service
from governance.services.approvals import ApprovalError, approval_decide
from governance.services.toolservers import alerts_resolve

P = ParamSpec("P")
TenantView = Callable[Concatenate[HttpRequest, Access, P], HttpResponse]


def tenant_page(
    role: str = Membership.Role.REVIEWER,
) -> Callable[[TenantView[P]], Callable[..., HttpResponse]]:
    """The view's tenant, for its members only (404 for anyone else); ``role`` is the least
    role it needs (403 for a member below it)."""

    def decorate(view: TenantView[P]) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, slug: str, *args: Any, **kwargs: Any) -> HttpResponse:
            access = tenant_access(user=request.user, slug=slug)
            if access is None:
                raise Http404("no such tenant")
            if not access.allows(role):
                raise PermissionDenied(f"this needs the {role} role")
            return view(request, access, *args, **kwargs)

        return wrapper

    return decorate


def _render(
    request: HttpRequest, access: Access, template: str, page: str, **context: Any
) -> HttpResponse:
    """A page of the tenant: the navigation bar needs the tenant, the role, the pending count
    and which page is current."""
    if "pending" not in context:
        context["pending"] = pending_count(tenant=access.tenant)
    context.update(
        access=access,
        tenant=access.tenant,
        slug=access.tenant.slug,
        page=page,
        many_tenants=member_tenants(user=request.user)[:2].count() > 1,
    )
    return render(request, template, context)


def _stream_url(access: Access, head: int, *, feed: bool = False) -> str:
    query = {"after": head, **({"feed": 1} if feed else {})}
    return f"{reverse('dashboard:stream', args=[access.tenant.slug])}?{urlencode(query)}"


# --- the tenant list and the overview ------------------------------------------------------------
@require_GET
@login_required
def index(request: HttpRequest) -> HttpResponse:
    tenants = list(member_tenants(user=request.user))
    if len(tenants) == 1:
        return redirect("dashboard:overview", slug=tenants[0].slug)
    return render(request, "dashboard/index.html", {"tenants": tenants})


@require_GET
@tenant_page()
def overview(request: HttpRequest, access: Access) -> HttpResponse:
    stats = overview_stats(tenant=access.tenant)
    return _render(
        request, access, "dashboard/overview.html", "overview", stats=stats, pending=stats.pending
    )


# --- the live feed -------------------------------------------------------------------------------
@require_GET
@tenant_page()
def feed(request: HttpRequest, access: Access) -> HttpResponse:
    head = chain_head_seq(tenant_id=access.tenant.id)
    rows = feed_list(tenant=access.tenant, upto=head)
    stream_url = _stream_url(access, head, feed=True)
    return _render(request, access, "dashboard/feed.html", "feed", rows=rows, stream_url=stream_url)


# --- approvals -----------------------------------------------------------------------------------
@require_GET
@tenant_page()
def approvals(request: HttpRequest, access: Access) -> HttpResponse:
    head = chain_head_seq(tenant_id=access.tenant.id)
    queue = approval_queue(tenant=access.tenant)
    return _render(
        request,
        access,
        "dashboard/approvals.html",
        "approvals",
        queue=queue,
        pending=len(queue.pending),
        stream_url=_stream_url(access, head),
    )


@require_GET
@tenant_page()
def approvals_queue(request: HttpRequest, access: Access) -> HttpResponse:
    """The queue alone, for htmx to refresh when the stream says approvals moved or a
    decision was made here; the navigation bar's pending badge comes along (out of band)."""
    context = {
        "queue": approval_queue(tenant=access.tenant),
        "tenant": access.tenant,
        "slug": access.tenant.slug,
        "refreshed": True,
    }
    return render(request, "dashboard/_approval_queue.html", context)


@require_POST
@tenant_page()
def approval_decision(request: HttpRequest, access: Access, approval_id: uuid.UUID) -> HttpResponse:
    """Approve or deny. Without JavaScript: a redirect back to the queue with a message. With
    htmx: the request's element, re-rendered (its new status, or the form and the error)."""
    approval = approval_get(tenant=access.tenant, approval_id=approval_id)
    if approval is None:
        raise Http404("no such approval request")
    form = DecisionForm(request.POST)
    error = notice = ""
    if not form.is_valid():
        error = "Choose Approve or Deny (and keep the comment under 2000 characters)."
    else:
        try:
            approval = approval_decide(
                approval=approval,
                user=request.user,  # type: ignore[arg-type]
                approve=form.approve,
                comment=form.cleaned_data["comment"],
                digest=form.cleaned_data["digest"] or None,
            )
            notice = f"{approval.tool} for {approval.agent_name}: {approval.status}."
        except ApprovalError as exc:
            error = f"Not decided: {exc}."
            approval = approval_get(tenant=access.tenant, approval_id=approval_id) or approval
    if request.htmx:  # type: ignore[attr-defined]
        context = {
            "row": ApprovalRow(approval, timezone.now()),
            "tenant": access.tenant,
            "slug": access.tenant.slug,
            "error": error,
            "notice": notice,
            "comment": request.POST.get("comment", ""),
        }
        response = render(request, "dashboard/_approval.html", context)
        if not error:  # the queue then moves it under "Recently closed", without a reload
            response["HX-Trigger-After-Settle"] = "approvals-changed"
        return response
    if error:
        messages.error(request, error)
    else:
        messages.success(request, notice)
    return redirect("dashboard:approvals", slug=access.tenant.slug)


# --- the audit explorer and a call's story -------------------------------------------------------
@require_GET
@tenant_page()
def audit(request: HttpRequest, access: Access) -> HttpResponse:
    tenant = access.tenant
    form = AuditFilterForm(request.GET)
    page = None
    exports: dict[str, str] = {}
    query = {name: request.GET[name] for name in FILTER_FIELDS if request.GET.get(name)}
    if form.is_valid():
        page = audit_page(
            tenant=tenant,
            filters=form.filters,
            before=form.cleaned_data["before"],
            after=form.cleaned_data["after"],
        )
        export = reverse("audit-api:export", kwargs={"slug": tenant.slug})
        exports = {
            fmt: f"{export}?{urlencode({'format': fmt, **form.export_query()})}"
            for fmt in ("jsonl", "csv")
        }
    agent_names, tool_names = filter_choices(tenant=tenant)
    return _render(
        request,
        access,
        "dashboard/audit.html",
        "audit",
        form=form,
        results=page,
        exports=exports,
        query=urlencode(query),
        agent_names=agent_names,
        tool_names=tool_names,
    )


@require_GET
@tenant_page()
def call(request: HttpRequest, access: Access, call_id: uuid.UUID) -> HttpResponse:
    story = call_story(tenant=access.tenant, call_id=call_id)
    if story is None:
        raise Http404("no such call")
    return _render(request, access, "dashboard/call.html", "audit", story=story)


# --- agents and their tokens ---------------------------------------------------------------------
@require_GET
@tenant_page()
def agents(request: HttpRequest, access: Access) -> HttpResponse:
    return _render(
        request, access, "dashboard/agents.html", "agents", rows=agent_rows(tenant=access.tenant)
    )


@require_POST
@tenant_page(role=Membership.Role.ADMIN)
def token_revoke(request: HttpRequest, access: Access, token_id: int) -> HttpResponse:
    token = token_get(tenant=access.tenant, token_id=token_id)
    if token is None:
        raise Http404("no such token")
    was_live = token.revoked_at is None
    token_revoke_service(token=token, actor=request.user.get_username())
    if was_live:
        messages.success(request, f"Token {token.prefix}… of {token.agent.name} revoked.")
    else:
        messages.info(request, f"Token {token.prefix}… of {token.agent.name} was already revoked.")
    return redirect("dashboard:agents", slug=access.tenant.slug)


# --- violations: guardrail hits, quarantined tools, alerts ---------------------------------------
@require_GET
@tenant_page()
def violations(request: HttpRequest, access: Access) -> HttpResponse:
    tenant = access.tenant
    try:
        before = int(request.GET["before"]) if request.GET.get("before") else None
    except ValueError:
        before = None
    hits = guardrail_hits(tenant=tenant, before=before)
    return _render(
        request,
        access,
        "dashboard/violations.html",
        "violations",
        hits=hits,
        older=hits[-1].record.seq if len(hits) == PAGE_SIZE else None,
        tools=quarantined_tools(tenant=tenant),
        alerts=alert_list(tenant=tenant),
        resolved=alert_list(tenant=tenant, resolved=True, limit=10),
    )


@require_POST
@tenant_page(role=Membership.Role.ADMIN)
def alert_resolve(request: HttpRequest, access: Access, alert_id: int) -> HttpResponse:
    alert = alert_get(tenant=access.tenant, alert_id=alert_id)
    if alert is None:
        raise Http404("no such alert")
    if alerts_resolve(alerts=[alert], actor=request.user.get_username()):
        messages.success(request, f"Alert resolved: {alert.title}")
    else:
        messages.info(request, f"Alert was already resolved: {alert.title}")
    return redirect("dashboard:violations", slug=access.tenant.slug)
