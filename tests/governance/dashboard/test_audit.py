"""The audit explorer: filters validated as the API validates them (errors on the form),
pages newest first by seq, export links carrying the same filters."""

from __future__ import annotations

import html as htmllib
import json
import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from audit.selectors import AuditFilters
from governance.dashboard.selectors import audit_page
from tests.audit.conftest import append, audit_record
from tests.governance.dashboard.conftest import World, login

pytestmark = pytest.mark.django_db


def explore(client: Client, w: World, query: str = "") -> str:
    response = client.get(reverse("dashboard:audit", args=[w.slug]) + query)
    assert response.status_code == 200
    return response.content.decode()


def seqs(html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<tr data-seq="(\d+)"', html)]


def test_filters_select_records(reviewer: Any, a: World) -> None:
    client = login(reviewer)
    html = explore(client, a, "?outcome=denied")
    assert str(a.denied_call) in html
    assert str(a.ok_call) not in html
    assert str(a.blocked_call) not in html
    assert len(seqs(html)) == 1
    html = explore(client, a, f"?kind=outcome&agent={a.agent.name}&tool={a.tool}")
    assert len(seqs(html)) == 1
    assert str(a.ok_call) in html
    html = explore(client, a, "?q=ACMESRV__MAIL")  # case-insensitive text
    assert len(seqs(html)) == 2
    assert str(a.blocked_call) in html
    everything = seqs(explore(client, a))
    assert everything == sorted(everything, reverse=True)  # newest first


def test_invalid_filters_are_shown_on_the_form(reviewer: Any, a: World) -> None:
    client = login(reviewer)
    html = explore(client, a, "?decision=maybe&since=yesterday")
    assert "&quot;maybe&quot; is not a valid choice." in html
    assert "Datetime has wrong format." in html
    assert "Fix the filters above" in html
    assert not seqs(html)
    html = explore(client, a, "?since=2030-01-02T10:00&until=2030-01-01T10:00")
    assert "must be later than since" in html


def test_times_from_the_browser_form_are_accepted(reviewer: Any, a: World) -> None:
    html = explore(login(reviewer), a, "?since=2000-01-01T00:00&until=2999-01-01T00:00:00")
    assert len(seqs(html)) > 5


def test_export_links_carry_the_filters(reviewer: Any, a: World) -> None:
    client = login(reviewer)
    html = explore(client, a, "?outcome=denied&since=2000-01-01T00:00")
    links = {
        fmt: htmllib.unescape(link)
        for link, fmt in re.findall(r'href="([^"]+/audit/export\?format=(jsonl|csv)[^"]*)"', html)
    }
    assert links["jsonl"] == (
        "/api/v1/tenants/acme/audit/export?format=jsonl&outcome=denied"
        "&since=2000-01-01T00%3A00%3A00.000000Z"
    )
    assert links["csv"].startswith("/api/v1/tenants/acme/audit/export?format=csv&outcome=denied")
    # The export selects exactly what the page showed (the lines past the records are proofs).
    exported = b"".join(client.get(links["jsonl"]).streaming_content).decode().splitlines()
    records = [json.loads(line) for line in exported if '"seq"' in line]
    assert [r["seq"] for r in records if "call_id" in r] == seqs(html)


def test_pages_walk_older_and_newer(a: World) -> None:
    everything = audit_page(tenant=a.tenant, filters=AuditFilters(), size=1000).rows
    all_seqs = [r.record.seq for r in everything]
    first = audit_page(tenant=a.tenant, filters=AuditFilters(), size=3)
    assert [r.record.seq for r in first.rows] == all_seqs[:3]
    assert first.newer is None
    assert first.older == all_seqs[2]
    second = audit_page(tenant=a.tenant, filters=AuditFilters(), size=3, before=first.older)
    assert [r.record.seq for r in second.rows] == all_seqs[3:6]
    assert second.newer == all_seqs[3]
    back = audit_page(tenant=a.tenant, filters=AuditFilters(), size=3, after=second.newer)
    assert [r.record.seq for r in back.rows] == all_seqs[:3]
    assert back.newer is None
    assert back.older == all_seqs[2]
    last = audit_page(tenant=a.tenant, filters=AuditFilters(), size=3, before=all_seqs[-2])
    assert [r.record.seq for r in last.rows] == all_seqs[-1:]
    assert last.older is None


def test_the_page_links_to_older_records(reviewer: Any, a: World) -> None:
    append(*(audit_record(a.tenant, tool="acmesrv__bulk") for _ in range(51)))
    client = login(reviewer)
    html = explore(client, a, "?tool=acmesrv__bulk")
    assert len(seqs(html)) == 50
    older = re.search(r'href="\?tool=acmesrv__bulk&amp;before=(\d+)"', html)
    assert older is not None
    html = explore(client, a, f"?tool=acmesrv__bulk&before={older[1]}")
    assert len(seqs(html)) == 1
    assert "after=" in html
    assert "« Newest" in html
