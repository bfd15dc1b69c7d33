"""The violations page: guardrail hits with what each check found, quarantined tools, open
alerts; resolving an alert is for admins only."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from governance.dashboard.selectors import guardrail_hits, quarantined_tools, verdict_lines
from governance.models import Alert
from tests.governance.dashboard.conftest import World, call, login

pytestmark = pytest.mark.django_db


def resolve_url(w: World) -> str:
    return reverse("dashboard:alert-resolve", args=[w.slug, w.alert.id])


def test_hits_are_flagged_records_and_blocked_outcomes_newest_first(a: World) -> None:
    flagged = call(
        a.tenant,
        a.agent,
        a.tool,
        flagged=True,
        guardrails=[{"check": "secrets", "stage": "input", "action": "flag", "verdict": "flag"}],
    )
    hits = guardrail_hits(tenant=a.tenant)
    assert [h.record.call_id for h in hits] == [flagged, flagged, a.blocked_call, a.blocked_call]
    assert [h.record.kind for h in hits] == ["outcome", "intent", "outcome", "intent"]
    assert guardrail_hits(tenant=a.tenant, before=hits[1].record.seq)[0].record == hits[2].record


def test_verdict_lines_say_which_check_found_what() -> None:
    verdicts = [
        {"check": "schema", "verdict": "pass"},
        {
            "check": "pii",
            "stage": "input",
            "verdict": "redact",
            "findings": [{"kind": "email", "path": "$.to"}, {"kind": "phone", "path": "$.body"}],
        },
        {"check": "injection_similarity", "stage": "output", "verdict": "flag", "score": 0.912},
        {"check": "size", "verdict": "error", "error": "timed out"},
    ]
    assert verdict_lines(verdicts) == [
        "pii redact (input): email at $.to; phone at $.body",
        "injection_similarity flag (output): score 0.91",
        "size error: error: timed out",
    ]
    assert verdict_lines(None) == []


def test_quarantined_tools(a: World) -> None:
    assert quarantined_tools(tenant=a.tenant) == [a.quarantined]


def test_admin_resolves_an_alert(admin: Any, a: World) -> None:
    page = login(admin).get(reverse("dashboard:violations", args=[a.slug])).content.decode()
    assert f'action="{resolve_url(a)}"' in page
    response = login(admin).post(resolve_url(a), follow=True)
    assert f"Alert resolved: {a.alert.title}" in response.content.decode()
    alert = Alert.objects.get(pk=a.alert.pk)
    assert alert.resolved_at is not None
    assert alert.resolved_by == "adam"
    again = login(admin).post(resolve_url(a), follow=True).content.decode()
    assert "Alert was already resolved" in again


def test_a_reviewer_cannot_resolve(reviewer: Any, a: World) -> None:
    assert login(reviewer).post(resolve_url(a)).status_code == 403
    assert Alert.objects.get(pk=a.alert.pk).resolved_at is None
