"""The agents page: presence, the last day's calls and denials, tokens; revoking is for
admins only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditRecord
from governance.dashboard.selectors import agent_rows
from governance.models import Agent, AgentToken
from governance.services.agents import token_issue, token_revoke
from tests.governance.dashboard.conftest import World, call, login

pytestmark = pytest.mark.django_db


def revoke_url(w: World, token: AgentToken | None = None) -> str:
    return reverse("dashboard:token-revoke", args=[w.slug, (token or w.token.record).id])


def test_presence_counts_and_tokens(settings: Any, a: World) -> None:
    settings.AGENT_PRESENCE_SECONDS = 10
    now = timezone.now()
    call(a.tenant, a.agent, a.tool, at=now - timedelta(hours=25))  # outside the day
    expired = token_issue(agent=a.agent, expires_at=now - timedelta(minutes=1)).record
    revoked = token_revoke(token=token_issue(agent=a.agent).record, actor="test")
    Agent.objects.filter(pk=a.agent.pk).update(last_seen_at=now - timedelta(seconds=15))
    (row,) = agent_rows(tenant=a.tenant, now=now)
    assert row.online  # within twice AGENT_PRESENCE_SECONDS
    assert (row.calls, row.denials) == (3, 1)
    states = {t.token.id: t.state for t in row.tokens}
    assert states == {a.token.record.id: "live", expired.id: "expired", revoked.id: "revoked"}
    Agent.objects.filter(pk=a.agent.pk).update(last_seen_at=now - timedelta(seconds=21))
    assert not agent_rows(tenant=a.tenant, now=now)[0].online


def test_admin_sees_revoke_buttons_for_live_tokens_only(admin: Any, a: World) -> None:
    revoked = token_revoke(token=token_issue(agent=a.agent).record, actor="test")
    html = login(admin).get(reverse("dashboard:agents", args=[a.slug])).content.decode()
    assert f'action="{revoke_url(a)}"' in html
    assert f'action="{revoke_url(a, revoked)}"' not in html
    assert html.count(">Revoke</button>") == 1


def test_admin_revokes_a_token(admin: Any, a: World) -> None:
    response = login(admin).post(revoke_url(a), follow=True)
    assert response.redirect_chain == [(reverse("dashboard:agents", args=[a.slug]), 302)]
    assert f"Token {a.token.record.prefix}… of acme-agent revoked." in response.content.decode()
    assert AgentToken.objects.get(pk=a.token.record.pk).revoked_at is not None
    record = AuditRecord.objects.filter(tenant=a.tenant, kind="admin").last()
    assert record.actor == "adam"
    # Again: nothing more happens, and the page says so.
    again = login(admin).post(revoke_url(a), follow=True).content.decode()
    assert "was already revoked" in again


def test_a_reviewer_cannot_revoke(reviewer: Any, a: World) -> None:
    assert login(reviewer).post(revoke_url(a)).status_code == 403
    assert AgentToken.objects.get(pk=a.token.record.pk).revoked_at is None


def test_revoke_is_post_only(admin: Any, a: World) -> None:
    assert login(admin).get(revoke_url(a)).status_code == 405
    assert AgentToken.objects.get(pk=a.token.record.pk).revoked_at is None
