"""Tenant isolation, the headline requirement: someone who is not a member of the tenant in
the URL gets 404 from every page and endpoint, and an id of another tenant under one's own
tenant's URL is a 404 too; A's pages never show B's data."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from governance.models import AgentToken, Alert, ApprovalRequest
from tests.governance.dashboard.conftest import World, login

pytestmark = pytest.mark.django_db

GET_PAGES = [
    ("overview", ()),
    ("feed", ()),
    ("stream", ()),
    ("approvals", ()),
    ("approvals-queue", ()),
    ("audit", ()),
    ("call", ("ok_call",)),
    ("agents", ()),
    ("violations", ()),
]
POSTS = [
    ("approval-decide", "approval", {"decision": "approve", "comment": "x"}),
    ("token-revoke", "token", {}),
    ("alert-resolve", "alert", {}),
]


def ids(w: World) -> dict[str, Any]:
    return {
        "ok_call": w.ok_call,
        "approval": w.approval.id,
        "token": w.token.record.id,
        "alert": w.alert.id,
    }


def unchanged(w: World) -> None:
    assert ApprovalRequest.objects.get(pk=w.approval.pk).status == "pending"
    assert AgentToken.objects.get(pk=w.token.record.pk).revoked_at is None
    assert Alert.objects.get(pk=w.alert.pk).resolved_at is None


@pytest.mark.parametrize(("name", "args"), GET_PAGES, ids=[p[0] for p in GET_PAGES])
def test_a_member_of_another_tenant_gets_404_on_every_page(
    outsider: Any, a: World, name: str, args: tuple[str, ...]
) -> None:
    url = reverse(f"dashboard:{name}", args=[a.slug, *(ids(a)[x] for x in args)])
    response = login(outsider).get(url)
    assert response.status_code == 404
    body = response.content.decode()
    for marker in a.markers():
        assert marker not in body


@pytest.mark.parametrize(("name", "key", "data"), POSTS, ids=[p[0] for p in POSTS])
def test_a_member_of_another_tenant_gets_404_on_every_post(
    outsider: Any, a: World, name: str, key: str, data: dict[str, str]
) -> None:
    url = reverse(f"dashboard:{name}", args=[a.slug, ids(a)[key]])
    assert login(outsider).post(url, data).status_code == 404
    assert login(outsider).post(url, data, HTTP_HX_REQUEST="true").status_code == 404
    unchanged(a)


@pytest.mark.parametrize(("name", "key", "data"), POSTS, ids=[p[0] for p in POSTS])
def test_another_tenants_id_under_ones_own_tenant_is_404(
    admin: Any, a: World, b: World, name: str, key: str, data: dict[str, str]
) -> None:
    url = reverse(f"dashboard:{name}", args=[a.slug, ids(b)[key]])
    assert login(admin).post(url, data).status_code == 404
    unchanged(b)


def test_another_tenants_call_under_ones_own_tenant_is_404(admin: Any, a: World, b: World) -> None:
    for call_id in (b.ok_call, b.approval.call_id):
        url = reverse("dashboard:call", args=[a.slug, call_id])
        assert login(admin).get(url).status_code == 404


def test_an_unknown_tenant_is_404_like_a_foreign_one(admin: Any, a: World) -> None:
    assert login(admin).get("/dashboard/nope/").status_code == 404


@pytest.mark.parametrize(("name", "key", "data"), POSTS, ids=[p[0] for p in POSTS])
def test_anonymous_posts_go_to_login_and_change_nothing(
    client: Any, a: World, name: str, key: str, data: dict[str, str]
) -> None:
    url = reverse(f"dashboard:{name}", args=[a.slug, ids(a)[key]])
    response = client.post(url, data)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    unchanged(a)


def test_tenant_bs_data_never_shows_on_tenant_as_pages(admin: Any, a: World, b: World) -> None:
    client = login(admin)
    urls = [
        reverse(f"dashboard:{name}", args=[a.slug, *(ids(a)[x] for x in args)])
        for name, args in GET_PAGES
        if name != "stream"  # streamed in test_stream
    ]
    urls += [reverse("dashboard:call", args=[a.slug, a.approval.call_id]), "/dashboard/"]
    for url in urls:
        response = client.get(url, follow=True)
        assert response.status_code == 200, url
        body = response.content.decode()
        for marker in b.markers():
            assert marker not in body, (url, marker)
    # Searching A's trail for B's names finds nothing (the form echoes the query, only that).
    audit = reverse("dashboard:audit", args=[a.slug])
    for query in (f"q={b.prefix}", f"agent={b.agent.name}", f"tool={b.tool}"):
        body = client.get(f"{audit}?{query}").content.decode()
        assert "No records match these filters." in body
        for marker in b.markers()[3:]:  # the ids, the token prefix, the alert
            assert marker not in body, (query, marker)
    # …while A's own data is there (the test would pass vacuously otherwise).
    feed = client.get(reverse("dashboard:feed", args=[a.slug])).content.decode()
    assert all(str(c) in feed for c in (a.ok_call, a.denied_call, a.blocked_call))
