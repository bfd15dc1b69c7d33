"""The audit REST API: search with filters and cursor pages, one record, a call's story, the
export over HTTP (WSGI and ASGI), authentication, and tenant isolation."""

from __future__ import annotations

import base64
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import AsyncClient
from rest_framework.test import APIClient

from audit.chainproof import read_csv, read_jsonl, verify_export
from audit.models import AuditRecord
from audit.signing import public_key
from governance.models import Membership, Tenant
from tests.audit.conftest import append, audit_record

pytestmark = pytest.mark.django_db

RECORDS = "/api/v1/tenants/acme/audit/records"
EXPORT = "/api/v1/tenants/acme/audit/export"
T0 = datetime(2036, 3, 1, 12, 0, tzinfo=UTC)  # after the tenant's creation, audited now


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def story(tenant: Tenant, other: Tenant) -> dict[str, Any]:
    """Three calls and an admin act in acme, minute by minute; globex has look-alikes."""
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    deny = {"decision": "deny", "reason": "no rule allows tool 'shell__exec' for this agent"}
    records = append(
        audit_record(tenant, call_id=a, at=at(0)),
        audit_record(tenant, call_id=b, at=at(1), agent_name="bob", tool="shell__exec", **deny),
        audit_record(tenant, call_id=a, at=at(2), kind="outcome", outcome="ok", latency_us=900),
        audit_record(
            tenant, call_id=b, at=at(3), agent_name="bob", tool="shell__exec", kind="outcome",
            outcome="denied", **deny,
        ),
        audit_record(tenant, call_id=c, at=at(4), tool="git__push", arguments={"branch": "Main"}),
        audit_record(
            tenant, call_id=c, at=at(5), tool="git__push", kind="verdict", flagged=True,
            guardrails=[{"check": "secrets", "verdict": "flag"}],
        ),
        audit_record(
            tenant, call_id=c, at=at(6), tool="git__push", kind="outcome",
            outcome="tool_error", error="Permission DENIED by remote",
        ),
        audit_record(
            tenant, at=at(7), kind="admin", tool="", decision="", agent_name="", agent_id=None,
            reason="updated", actor="root", subject="governance.rule 7 'no shell'",
            diff={"effect": ["allow", "deny"]},
        ),
        audit_record(other, at=at(0), reason="globex-secret"),
        audit_record(other, at=at(1), agent_name="bob", tool="shell__exec", **deny),
    )  # fmt: skip
    mine = [r for r in records if r.tenant_id == tenant.id]
    return {"a": a, "b": b, "c": c, "records": mine, "theirs": records[-2:]}


def seqs(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [r["seq"] for r in response.json()["results"]]


def expected(story: dict[str, Any], keep: Any) -> list[int]:
    return [r.seq for r in reversed(story["records"]) if keep(r)]


# --- search ------------------------------------------------------------------------------------
def test_records_come_newest_first_with_every_field(api, story):
    response = api.get(RECORDS, {"since": T0.isoformat()})
    assert seqs(response) == expected(story, lambda r: True)
    outcome = response.json()["results"][4]
    record = story["records"][3]
    assert outcome == {
        "seq": record.seq,
        "call_id": str(story["b"]),
        "kind": "outcome",
        "agent_id": 1,
        "agent_name": "bob",
        "transport": "ws",
        "protocol_era": "handshake",
        "protocol_version": "2025-11-25",
        "request_id": "",
        "tool": "shell__exec",
        "arguments": {"path": "/srv/repo"},
        "decision": "deny",
        "reason": "no rule allows tool 'shell__exec' for this agent",
        "rule_id": None,
        "shadow": {},
        "policy_version": None,
        "guardrails": [],
        "flagged": False,
        "outcome": "denied",
        "error": "",
        "result_digest": "",
        "latency_us": None,
        "started_at": "2036-03-01T12:02:59.999750Z",
        "created_at": "2036-03-01T12:03:00.000000Z",
        "actor": "",
        "subject": "",
        "diff": {},
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"agent": "bob"}, lambda r: r.agent_name == "bob"),
        ({"tool": "git__push"}, lambda r: r.tool == "git__push"),
        ({"decision": "deny"}, lambda r: r.decision == "deny"),
        ({"outcome": "tool_error"}, lambda r: r.outcome == "tool_error"),
        ({"kind": "verdict"}, lambda r: r.kind == "verdict"),
        ({"kind": "admin"}, lambda r: r.kind == "admin"),
        ({"since": at(2).isoformat()}, lambda r: r.created_at >= at(2)),
        ({"until": at(2).isoformat()}, lambda r: T0 <= r.created_at < at(2)),  # until: exclusive
        ({"since": "2036-03-01T12:01:00Z", "until": "2036-03-01T12:03:00Z"},
         lambda r: at(1) <= r.created_at < at(3)),
        ({"since": "2036-03-01T13:01:00+01:00", "until": "2036-03-01T12:02:00"},  # naive: UTC
         lambda r: at(1) <= r.created_at < at(2)),
        # q: case-insensitive, in tool, agent, reason, error, subject or the arguments' JSON
        ({"q": "SHELL__"}, lambda r: r.tool == "shell__exec"),
        ({"q": "Bo"}, lambda r: r.agent_name == "bob"),
        ({"q": "no rule allows"}, lambda r: r.decision == "deny"),
        ({"q": "permission denied"}, lambda r: r.outcome == "tool_error"),
        ({"q": "'no shell'"}, lambda r: r.kind == "admin"),
        ({"q": "main"}, lambda r: r.arguments == {"branch": "Main"}),
        ({"q": '"branch"'}, lambda r: r.arguments == {"branch": "Main"}),
        # combined: every filter holds
        ({"agent": "alice", "tool": "git__push", "kind": "outcome"},
         lambda r: r.tool == "git__push" and r.kind == "outcome"),
        ({"decision": "deny", "kind": "intent", "until": at(3).isoformat()},
         lambda r: r.decision == "deny" and r.kind == "intent"),
        ({"q": "git", "outcome": "ok"}, lambda r: r.outcome == "ok"),
        ({"agent": "bob", "tool": "git__status"}, lambda r: False),
    ],
)  # fmt: skip
def test_each_filter_and_their_combinations(api, story, params, keep):
    since_t0 = {"since": T0.isoformat()} | params  # leaves out the tenant's own creation
    assert seqs(api.get(RECORDS, since_t0)) == expected(story, keep)


def test_an_empty_filter_is_no_filter(api, story):
    # As an HTML form sends it: ?agent=&tool= selects everything.
    everything = seqs(api.get(RECORDS, {"since": T0.isoformat()}))
    assert seqs(api.get(RECORDS, {"since": T0.isoformat(), "agent": "", "tool": ""})) == everything


def test_filter_by_call_id(api, story):
    response = api.get(RECORDS, {"call_id": str(story["c"])})
    assert seqs(response) == expected(story, lambda r: r.call_id == story["c"])


def test_cursor_pages_cover_everything_once(api, tenant):
    records = append(*(audit_record(tenant, request_id=str(n)) for n in range(53)))
    seen: list[int] = []
    pages = 0
    url: str | None = RECORDS + "?" + urlencode({"page_size": 10, "tool": "git__status"})
    while url:
        body = api.get(url).json()
        assert len(body["results"]) <= 10
        seen += [r["seq"] for r in body["results"]]
        url, pages = body["next"], pages + 1
        # A record written meanwhile neither shifts nor repeats the next page.
        append(audit_record(tenant, tool="git__late"))
    assert pages == 6
    assert seen == sorted((r.seq for r in records), reverse=True)
    # And back: the previous link of the last page gives the page before it.
    back = api.get(body["previous"]).json()
    assert [r["seq"] for r in back["results"]] == seen[-13:-3]


def test_page_size_defaults_to_100(api, tenant):
    append(*(audit_record(tenant) for _ in range(120)))
    body = api.get(RECORDS, {"tool": "git__status"}).json()
    assert len(body["results"]) == 100
    assert body["next"]
    assert body["previous"] is None


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        ({"decision": "maybe"}, "decision", '"maybe" is not a valid choice.'),
        ({"outcome": "fine"}, "outcome", '"fine" is not a valid choice.'),
        ({"kind": "all"}, "kind", '"all" is not a valid choice.'),
        ({"since": "yesterday"}, "since", "Datetime has wrong format."),
        ({"until": "2026-13-01"}, "until", "Datetime has wrong format."),
        ({"since": "2036-03-02T00:00:00Z", "until": "2036-03-01T00:00:00Z"}, "until",
         "must be later than since"),
        ({"call_id": "123"}, "call_id", "Must be a valid UUID."),
        ({"page_size": "0"}, "page_size", "Ensure this value is greater than or equal to 1."),
        ({"page_size": "1001"}, "page_size", "less than or equal to 1000."),
        ({"page_size": "ten"}, "page_size", "A valid integer is required."),
        ({"agnet": "bob"}, "agnet", "unknown parameter; use agent, tool, decision"),
        ({"cursor": "bogus"}, "cursor", "invalid cursor"),
    ],
)  # fmt: skip
def test_a_bad_parameter_is_a_400_that_names_it(api, story, params, field, message):
    response = api.get(RECORDS, params)
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert message in response.json()[field][0]


# --- one record, one call ----------------------------------------------------------------------
def test_one_record_by_seq(api, story):
    record = story["records"][4]
    response = api.get(f"{RECORDS}/{record.seq}")
    assert response.status_code == 200
    assert response.json()["hash"] == record.hash
    assert response.json()["arguments"] == {"branch": "Main"}
    missing = api.get(f"{RECORDS}/999999")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no record 999999 in tenant 'acme'"}


def test_a_call_is_shown_whole_in_order(api, story):
    response = api.get(f"/api/v1/tenants/acme/audit/calls/{story['c']}")
    assert response.status_code == 200
    body = response.json()
    assert body["call_id"] == str(story["c"])
    assert [r["kind"] for r in body["records"]] == ["intent", "verdict", "outcome"]
    assert [r["seq"] for r in body["records"]] == [r.seq for r in story["records"][4:7]]
    assert body["records"][1]["guardrails"] == [{"check": "secrets", "verdict": "flag"}]
    assert body["records"][2]["error"] == "Permission DENIED by remote"


def test_an_unknown_or_malformed_call(api, story):
    unknown = api.get(f"/api/v1/tenants/acme/audit/calls/{uuid.uuid4()}")
    assert unknown.status_code == 404
    assert unknown.json()["detail"].startswith("no call ")
    malformed = api.get("/api/v1/tenants/acme/audit/calls/not-a-uuid")
    assert malformed.status_code == 400
    assert malformed.json() == {"call_id": ["must be a UUID"]}


# --- authentication and tenants ----------------------------------------------------------------
URLS = [
    RECORDS,
    f"{RECORDS}/1",
    f"/api/v1/tenants/acme/audit/calls/{uuid.UUID(int=1)}",
    EXPORT,
]


@pytest.mark.parametrize("url", URLS)
def test_anonymous_is_401_and_a_non_member_is_told_no_such_tenant(
    story, django_user_model, other, url
):
    anonymous = APIClient().get(url)
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == 'Basic realm="api"'
    mallory = django_user_model.objects.create_user("mallory", password="pw-mallory", is_staff=True)
    # Staff status alone opens no tenant; nor does reviewing another tenant.
    Membership.objects.create(user=mallory, tenant=other, role=Membership.Role.ADMIN)
    user = APIClient().get(url, HTTP_AUTHORIZATION=basic("mallory", "pw-mallory"))
    assert user.status_code == 404
    assert user.json() == {"detail": "no tenant 'acme'"}


@pytest.mark.parametrize("url", URLS)
def test_a_reviewer_of_the_tenant_gets_in(story, django_user_model, tenant, url):
    rita = django_user_model.objects.create_user("rita", password="pw-rita")
    Membership.objects.create(user=rita, tenant=tenant, role=Membership.Role.REVIEWER)
    response = APIClient().get(url, HTTP_AUTHORIZATION=basic("rita", "pw-rita"))
    assert response.status_code in (200, 404)
    if response.status_code == 404:
        assert response.json()["detail"].startswith("no ")
        assert response.json()["detail"] != "no tenant 'acme'"


@pytest.mark.parametrize("url", URLS)
def test_staff_with_basic_auth_gets_in(story, admin_user, url):
    response = APIClient().get(url, HTTP_AUTHORIZATION=basic("admin", "password"))
    assert response.status_code in (200, 404)
    if response.status_code == 404:  # no record 1 or call 1 in this tenant: said so, in JSON
        assert response.json()["detail"].startswith("no ")


@pytest.mark.parametrize("url", [u.replace("/acme/", "/nope/") for u in URLS])
def test_an_unknown_tenant_is_404(api, url):
    response = api.get(url)
    assert response.status_code == 404
    assert response.json() == {"detail": "no tenant 'nope'"}


def test_another_tenants_records_never_appear(api, story):
    theirs = story["theirs"]
    assert seqs(api.get(RECORDS, {"q": "globex-secret"})) == []
    assert all(
        r["hash"] not in {t.hash for t in theirs}
        for r in api.get(RECORDS, {"page_size": 1000}).json()["results"]
    )
    assert api.get(f"/api/v1/tenants/acme/audit/calls/{theirs[0].call_id}").status_code == 404
    # Their seq numbers are their own: the same number here is acme's record.
    mine = api.get(f"{RECORDS}/{theirs[0].seq}").json()
    assert mine["hash"] == AuditRecord.objects.get(tenant__slug="acme", seq=theirs[0].seq).hash
    export = b"".join(api.get(EXPORT, {"q": "globex-secret"}).streaming_content)
    assert [e["line"] for e in read_jsonl(export.decode().splitlines())] == ["header", "checkpoint"]
    # And from their side, acme's do not appear either.
    globex = api.get("/api/v1/tenants/globex/audit/records", {"agent": "alice"})
    assert [r["reason"] for r in globex.json()["results"]] == ["globex-secret"]


# --- export over HTTP --------------------------------------------------------------------------
@pytest.mark.parametrize("format", ["jsonl", "csv"])
def test_export_downloads_a_verifiable_file(api, story, format):
    response = api.get(EXPORT, {"format": format, "agent": "bob"})
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Disposition"].startswith('attachment; filename="audit-acme-')
    assert response["Content-Disposition"].endswith(f'Z.{format}"')
    media = "application/x-ndjson" if format == "jsonl" else "text/csv"
    assert response["Content-Type"] == f"{media}; charset=utf-8"
    text = io.StringIO(b"".join(response.streaming_content).decode(), newline="")
    lines = list(read_csv(text) if format == "csv" else read_jsonl(text))
    assert lines[0]["filters"] == {"agent": "bob"}
    assert [e["seq"] for e in lines if e["line"] == "record"] == [
        r.seq for r in story["records"] if r.agent_name == "bob"
    ]
    report = verify_export(iter(lines), public_key())
    assert report.ok, report.message
    assert report.records == 2


def test_export_defaults_to_jsonl_and_checks_its_parameters(api, story):
    response = api.get(EXPORT)
    assert response["Content-Type"].startswith("application/x-ndjson")
    bad = api.get(EXPORT, {"format": "xml", "since": "soon", "page_size": "5"})
    assert bad.status_code == 400
    assert bad["Content-Type"] == "application/json"
    assert set(bad.json()) == {"format", "since", "page_size"}
    assert '"xml" is not a valid choice.' in bad.json()["format"][0]


@pytest.mark.django_db(transaction=True)
async def test_export_streams_under_asgi(story, admin_user):
    """Under ASGI the view hands Django an async iterator: chunks are pulled one by one."""
    # Headers per request: AsyncClient(headers=…) sends them under WSGI names (Django 5.2).
    auth = {"Authorization": basic("admin", "password")}
    response = await AsyncClient().get(EXPORT, {"format": "jsonl", "kind": "outcome"}, headers=auth)
    assert response.status_code == 200
    assert response.is_async
    chunks = [chunk async for chunk in response.streaming_content]
    assert len(chunks) >= 3  # the header, the range, the checkpoint: each its own piece
    report = verify_export(read_jsonl(b"".join(chunks).decode().splitlines()), public_key())
    assert report.ok, report.message
    assert report.records == 3
