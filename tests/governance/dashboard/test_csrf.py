"""Every form carries a CSRF token, and every POST without one is refused."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from governance.models import AgentToken, Alert, ApprovalRequest
from tests.governance.dashboard.conftest import World, login

pytestmark = pytest.mark.django_db


def test_posts_without_a_csrf_token_are_refused(admin: Any, a: World) -> None:
    client = login(admin, enforce_csrf_checks=True)
    posts = [
        (reverse("dashboard:approval-decide", args=[a.slug, a.approval.id]), {"decision": "deny"}),
        (reverse("dashboard:token-revoke", args=[a.slug, a.token.record.id]), {}),
        (reverse("dashboard:alert-resolve", args=[a.slug, a.alert.id]), {}),
        (reverse("logout"), {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
        assert client.post(url, data, HTTP_HX_REQUEST="true").status_code == 403, url
    assert ApprovalRequest.objects.get(pk=a.approval.pk).status == "pending"
    assert AgentToken.objects.get(pk=a.token.record.pk).revoked_at is None
    assert Alert.objects.get(pk=a.alert.pk).resolved_at is None
    assert client.get(reverse("dashboard:overview", args=[a.slug])).status_code == 200


def test_every_form_carries_a_csrf_token(admin: Any, a: World) -> None:
    client = login(admin, enforce_csrf_checks=True)
    for name in ("overview", "approvals", "approvals-queue", "agents", "violations", "audit"):
        html = client.get(reverse(f"dashboard:{name}", args=[a.slug])).content.decode()
        posts = re.findall(r'<form[^>]*method="post".*?</form>', html, flags=re.DOTALL)
        assert all("csrfmiddlewaretoken" in form for form in posts), name
    # The admin pages do have their forms: revoke, resolve, decide, log out.
    agents = client.get(reverse("dashboard:agents", args=[a.slug])).content.decode()
    assert len(re.findall(r'<form[^>]*method="post"', agents)) == 2


def test_a_post_with_the_token_goes_through(admin: Any, a: World) -> None:
    client = login(admin, enforce_csrf_checks=True)
    client.get(reverse("dashboard:approvals", args=[a.slug]))
    token = client.cookies["csrftoken"].value
    url = reverse("dashboard:approval-decide", args=[a.slug, a.approval.id])
    response = client.post(url, {"decision": "deny", "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert ApprovalRequest.objects.get(pk=a.approval.pk).status == "denied"
