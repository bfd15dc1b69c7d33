"""The pages render fully without JavaScript, for a tenant's members; the tenant list, the
landing redirect, login and logout."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from governance.models import Membership
from tests.governance.dashboard.conftest import PASSWORD, World, hold, login, member

pytestmark = pytest.mark.django_db


def page(client: Client, name: str, slug: str, *args: Any) -> str:
    response = client.get(reverse(f"dashboard:{name}", args=[slug, *args]))
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


def test_home_redirects_to_the_dashboard(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"


@pytest.mark.parametrize(
    "path", ["/dashboard/", "/dashboard/acme/", "/dashboard/acme/feed", "/dashboard/acme/audit"]
)
def test_anonymous_is_sent_to_login(client: Client, a: World, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith(f"/accounts/login/?next={path}")


def test_login_page_is_ours_and_signs_in(client: Client, reviewer: Any) -> None:
    html = client.get("/accounts/login/").content.decode()
    assert 'name="username"' in html
    assert 'name="password"' in html
    assert '<button type="submit"' in html
    assert "csrfmiddlewaretoken" in html
    assert "http://" not in html
    assert "https://" not in html
    response = client.post("/accounts/login/", {"username": "rita", "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    # One tenant: straight in.
    assert client.get("/dashboard/")["Location"] == "/dashboard/acme/"


def test_login_with_a_wrong_password_says_so(client: Client, reviewer: Any) -> None:
    response = client.post("/accounts/login/", {"username": "rita", "password": "nope"})
    assert response.status_code == 200
    assert "did not match" in response.content.decode()


def test_logout_is_a_post(reviewer: Any, a: World) -> None:
    client = login(reviewer)
    html = page(client, "overview", a.slug)
    assert f'action="{reverse("logout")}"' in html
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get("/dashboard/").status_code == 302  # back to login


def test_tenant_list_for_several_tenants(django_user_model: Any, a: World, b: World) -> None:
    user = member(django_user_model, a.tenant, "multi", Membership.Role.REVIEWER)
    Membership.objects.create(user=user, tenant=b.tenant, role=Membership.Role.ADMIN)
    client = login(user)
    response = client.get("/dashboard/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/dashboard/acme/" in html
    assert "/dashboard/globex/" in html
    assert "Switch tenant" in page(client, "overview", a.slug)


def test_tenant_list_without_tenants(django_user_model: Any) -> None:
    user = django_user_model.objects.create_user(username="nobody", password=PASSWORD)
    response = login(user).get("/dashboard/")
    assert response.status_code == 200
    assert "not a reviewer or admin of any tenant" in response.content.decode()


def test_navigation_bar(reviewer: Any, a: World) -> None:
    html = page(login(reviewer), "feed", a.slug)
    assert "Acme Corp" in html
    for name in ("overview", "feed", "approvals", "audit", "agents", "violations"):
        assert reverse(f"dashboard:{name}", args=[a.slug]) in html
    assert '<span id="pending-count" class="count hot"' in html
    assert ">1</span>" in html  # one pending approval
    assert "rita" in html
    assert "reviewer" in html
    assert 'aria-current="page"' in html


def test_overview_shows_numbers_and_charts_without_javascript(reviewer: Any, a: World) -> None:
    html = page(login(reviewer), "overview", a.slug)
    assert html.count("<svg") == 10  # five charts, two windows
    assert "Last hour" in html
    assert "Last 24 hours" in html
    assert '<span class="value">3</span><span class="label">calls, last hour' in html
    assert '<span class="value">1</span><span class="label">denials, last 24 h' in html
    assert '<span class="value">1</span><span class="label">pending approvals' in html
    assert "<script" in html  # htmx is there, but nothing above needs it


def test_feed_lists_calls_newest_first(reviewer: Any, a: World) -> None:
    html = page(login(reviewer), "feed", a.slug)
    assert '<table id="feed"' in html
    rows = [
        html.index(f'<tr data-call-id="{c}"') for c in (a.blocked_call, a.denied_call, a.ok_call)
    ]
    assert rows == sorted(rows)
    assert "acmesrv__status" in html
    assert "2.0 ms" in html
    assert '<span class="flag">pii</span>' in html
    assert reverse("dashboard:call", args=[a.slug, a.ok_call]) in html
    assert 'sse-connect="/dashboard/acme/stream?after=' in html
    assert "feed=1" in html
    assert 'sse-swap="record"' in html


def test_approvals_page_shows_the_queue(reviewer: Any, a: World) -> None:
    html = page(login(reviewer), "approvals", a.slug)
    assert 'id="approvals"' in html
    assert f'data-approval-id="{a.approval.id}"' in html
    assert '<textarea name="comment"' in html
    assert '<button type="submit" name="decision" value="approve"' in html
    assert '<button type="submit" name="decision" value="deny"' in html
    assert "&quot;branch&quot;: &quot;main&quot;" in html  # pretty JSON, escaped
    assert a.approval.arguments_digest in html
    assert "pushing needs a human" in html
    assert "left" in html  # time to expiry
    assert 'hx-trigger="sse:approvals, approvals-changed from:body"' in html


def test_arguments_are_escaped(reviewer: Any, a: World) -> None:
    hold(a.tenant, a.agent, "acmesrv__push", arguments={"note": "<script>alert(1)</script>"})
    html = page(login(reviewer), "approvals", a.slug)
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_agents_page(reviewer: Any, a: World) -> None:
    html = page(login(reviewer), "agents", a.slug)
    assert "acme-agent" in html
    assert a.token.record.prefix in html
    assert "offline" in html
    assert "Revoke" not in html  # a reviewer has no revoke button


def test_violations_page(reviewer: Any, a: World) -> None:
    html = page(login(reviewer), "violations", a.slug)
    assert a.alert.title in html
    assert "acmesrv__status" in html  # the quarantined tool
    assert "pii block (input): email at $.to" in html
    assert reverse("dashboard:call", args=[a.slug, a.blocked_call]) in html
    assert "Resolve" not in html  # reviewers do not resolve alerts


def test_call_story_shows_every_record(reviewer: Any, a: World) -> None:
    html = page(login(reviewer), "call", a.slug, a.blocked_call)
    assert html.count('<li class="record') == 2
    assert "intent" in html
    assert "outcome" in html
    assert "pii block (input): email at $.to" in html
    assert "&quot;path&quot;: &quot;/srv/repo&quot;" in html


def test_call_story_of_a_held_call_shows_the_approval(reviewer: Any, a: World) -> None:
    html = page(login(reviewer), "call", a.slug, a.approval.call_id)
    assert "Approval request" in html
    assert "approval" in html
    assert "pending" in html


def test_unknown_call_is_404(reviewer: Any, a: World) -> None:
    url = reverse("dashboard:call", args=[a.slug, "00000000-0000-0000-0000-000000000000"])
    assert login(reviewer).get(url).status_code == 404
