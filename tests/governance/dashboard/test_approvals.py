"""Deciding held calls: a plain POST form that works without JavaScript (redirect back with a
message) and the same form through htmx (the request's element comes back, re-rendered);
the service's refusals are shown to the reviewer; both roles may decide."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from governance.models import Agent, ApprovalRequest
from tests.governance.dashboard.conftest import World, hold, login

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def decide_url(w: World, approval: ApprovalRequest | None = None) -> str:
    return reverse("dashboard:approval-decide", args=[w.slug, (approval or w.approval).id])


def status(approval: ApprovalRequest) -> str:
    return ApprovalRequest.objects.get(pk=approval.pk).status


@pytest.mark.parametrize("role", ["reviewer", "admin"])
def test_approve_without_javascript(request: Any, a: World, role: str) -> None:
    user = request.getfixturevalue(role)
    data = {"decision": "approve", "comment": "ok, ship it", "digest": a.approval.arguments_digest}
    response = login(user).post(decide_url(a), data, follow=True)
    assert response.redirect_chain == [(reverse("dashboard:approvals", args=[a.slug]), 302)]
    html = response.content.decode()
    assert "acmesrv__push for acme-agent: approved." in html
    approval = ApprovalRequest.objects.get(pk=a.approval.pk)
    assert approval.status == "approved"
    assert approval.decided_by == user
    assert approval.comment == "ok, ship it"
    step = AuditRecord.objects.filter(call_id=approval.call_id, kind="approval").last()
    assert step.actor == user.get_username()
    assert step.diff["status"] == ["pending", "approved"]
    # It moved from the queue to the recently closed.
    assert f'<tr data-approval-id="{approval.id}"' in html
    assert "Nothing is waiting for a decision." in html


def test_deny_with_htmx_swaps_the_request(reviewer: Any, a: World) -> None:
    data = {"decision": "deny", "comment": "not on a Friday"}
    response = login(reviewer).post(decide_url(a), data, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.startswith(f'<article class="approval s-denied" data-approval-id="{a.approval.id}"')
    assert '<span class="badge s-denied">denied</span>' in html
    assert "not on a Friday" in html
    assert "<textarea" not in html
    assert "<form" not in html
    assert response["HX-Trigger-After-Settle"] == "approvals-changed"  # the queue refreshes
    assert status(a.approval) == "denied"


def test_four_eyes_refusal_is_shown_and_keeps_the_form(reviewer: Any, a: World) -> None:
    Agent.objects.filter(pk=a.agent.pk).update(owner=reviewer)
    page = login(reviewer).get(reverse("dashboard:approvals", args=[a.slug])).content.decode()
    assert "You are responsible for acme-agent: under four eyes" in page
    data = {"decision": "approve", "comment": "mine, trust me"}
    html = login(reviewer).post(decide_url(a), data, **HTMX).content.decode()
    assert '<p class="error" role="alert">Not decided: four eyes: you are responsible' in html
    assert '<button type="submit" name="decision" value="approve"' in html
    assert "mine, trust me</textarea>" in html  # the comment is kept
    assert status(a.approval) == "pending"
    refused = login(reviewer).post(decide_url(a), data, **HTMX)
    assert "HX-Trigger-After-Settle" not in refused  # it stays where it is, with the error
    # Without JavaScript: the same message, on the page it redirects to.
    response = login(reviewer).post(decide_url(a), data, follow=True)
    assert "four eyes: you are responsible for agent" in response.content.decode()
    # Denying one's own agent's request is allowed.
    login(reviewer).post(decide_url(a), {"decision": "deny"})
    assert status(a.approval) == "denied"


def test_a_second_decision_is_refused(reviewer: Any, admin: Any, a: World) -> None:
    login(admin).post(decide_url(a), {"decision": "approve"})
    html = login(reviewer).post(decide_url(a), {"decision": "deny"}, **HTMX).content.decode()
    assert "Not decided: already approved by adam." in html
    assert '<span class="badge s-approved">approved</span>' in html
    assert status(a.approval) == "approved"


def test_an_expired_request_cannot_be_decided(reviewer: Any, a: World) -> None:
    approval = hold(a.tenant, a.agent, "acmesrv__push", timeout_seconds=0.001)
    time.sleep(0.01)
    html = login(reviewer).post(decide_url(a, approval), {"decision": "approve"}, **HTMX)
    assert "this request has expired" in html.content.decode()
    assert status(approval) == "pending"  # the gateway closes it; nobody approved it


def test_a_decision_is_bound_to_the_arguments_shown(reviewer: Any, a: World) -> None:
    data = {"decision": "approve", "digest": "0" * 64}
    html = login(reviewer).post(decide_url(a), data, **HTMX).content.decode()
    assert "the arguments you decided on are not this request&#x27;s" in html
    assert status(a.approval) == "pending"


def test_a_decision_must_be_approve_or_deny(reviewer: Any, a: World) -> None:
    response = login(reviewer).post(decide_url(a), {"decision": "maybe"}, follow=True)
    assert "Choose Approve or Deny" in response.content.decode()
    assert status(a.approval) == "pending"


def test_decide_is_post_only(reviewer: Any, a: World) -> None:
    assert login(reviewer).get(decide_url(a)).status_code == 405


def test_queue_partial_lists_pending_and_closed(reviewer: Any, a: World) -> None:
    second = hold(a.tenant, a.agent, "acmesrv__tag")
    login(reviewer).post(decide_url(a), {"decision": "deny"})
    response = login(reviewer).get(reverse("dashboard:approvals-queue", args=[a.slug]))
    html = response.content.decode()
    assert "<html" not in html  # a fragment
    assert f'<article class="approval s-pending" data-approval-id="{second.id}"' in html
    assert f'<tr data-approval-id="{a.approval.id}"' in html
    assert html.count(f'data-approval-id="{a.approval.id}"') == 1
    assert f'id="comment-{second.id}" rows="2" maxlength="2000" hx-preserve="true"' in html
    # The navigation bar's badge comes along, out of band: one request still pending.
    assert 'id="pending-count"' in html
    assert 'hx-swap-oob="true" title="1 waiting for a decision">1</span>' in html


def test_pending_requests_are_newest_first(reviewer: Any, a: World) -> None:
    newer = hold(a.tenant, a.agent, "acmesrv__tag")
    html = login(reviewer).get(reverse("dashboard:approvals", args=[a.slug])).content.decode()
    assert html.index(f'data-approval-id="{newer.id}"') < html.index(
        f'data-approval-id="{a.approval.id}"'
    )
