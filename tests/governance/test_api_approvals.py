"""The approvals API: list and decide a tenant's requests, for its members only."""

from __future__ import annotations

import base64
import uuid

import pytest
from rest_framework.test import APIClient

from audit.models import AuditRecord
from audit.verify import chain_verify
from governance.models import ApprovalRequest, Membership, Tenant
from governance.services.agents import agent_create, tenant_create
from governance.services.approvals import approval_request_create, arguments_digest

pytestmark = pytest.mark.django_db

ARGS = {"repo": "/srv/app", "branch": "main"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def held(tenant: Tenant, agent_name: str = "alice", **arguments: str) -> ApprovalRequest:
    agent = tenant.agents.get(name=agent_name)
    args = arguments or ARGS
    return approval_request_create(
        tenant_id=tenant.id,
        agent_id=agent.id,
        agent_name=agent.name,
        call_id=uuid.uuid4(),
        tool="git__push",
        arguments=args,
        recorded_arguments=args,
        rule_id=None,
        reason="pushes need a human",
        policy_version=tenant.version,
        node="test",
        timeout_seconds=600,
        lease_seconds=30,
    )


@pytest.fixture
def world(django_user_model):
    acme, other = tenant_create(slug="acme"), tenant_create(slug="other")
    olga = django_user_model.objects.create_user("olga", password="pw-olga")
    agent_create(tenant=acme, name="alice", owner=olga)
    agent_create(tenant=other, name="mallet")
    for name, tenant in (("rita", acme), ("olga", acme), ("oscar", other)):
        user = django_user_model.objects.filter(username=name).first()
        user = user or django_user_model.objects.create_user(name, password=f"pw-{name}")
        Membership.objects.create(user=user, tenant=tenant, role=Membership.Role.REVIEWER)
    return acme, other


def client(name: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=basic(name, f"pw-{name}"))
    return api


URL = "/api/v1/tenants/acme/approvals"


def test_the_queue_lists_pending_requests_newest_first(world):
    acme, _ = world
    first, second = held(acme), held(acme, branch="dev")
    answer = client("rita").get(URL, {"status": "pending"})
    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [r["id"] for r in results] == [str(second.pk), str(first.pk)]
    assert results[1] | {"created_at": None, "expires_at": None} == {
        "id": str(first.pk),
        "status": "pending",
        "tool": "git__push",
        "agent": "alice",
        "arguments": ARGS,
        "arguments_digest": arguments_digest(ARGS),
        "rule_id": None,
        "reason": "pushes need a human",
        "policy_version": acme.version,
        "call_id": str(first.call_id),
        "created_at": None,
        "expires_at": None,
        "decided_at": None,
        "decided_by": "",
        "comment": "",
        "released_at": None,
    }
    assert client("rita").get(URL, {"status": "denied"}).json()["results"] == []
    one = client("rita").get(f"{URL}/{first.pk}")
    assert one.json()["id"] == str(first.pk)


def test_bad_queries_and_bodies_are_400_naming_the_field(world):
    acme, _ = world
    approval = held(acme)
    assert client("rita").get(URL, {"status": "maybe"}).json() == {
        "status": ['"maybe" is not a valid choice.']
    }
    assert client("rita").get(URL, {"statu": "pending"}).status_code == 400
    decide = f"{URL}/{approval.pk}/decision"
    bad = client("rita").post(decide, {"decision": "perhaps"}, format="json")
    assert bad.status_code == 400
    assert "decision" in bad.json()
    typo = client("rita").post(decide, {"decision": "approve", "coment": "x"}, format="json")
    assert typo.status_code == 400
    assert typo.json() == {"coment": ["unknown field; send decision, comment, arguments_digest"]}
    short = {"decision": "approve", "arguments_digest": "xyz"}
    assert client("rita").post(decide, short, format="json").status_code == 400
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "pending"


def test_a_reviewer_approves_with_a_comment_and_it_is_recorded(world):
    acme, _ = world
    approval = held(acme)
    body = {
        "decision": "approve",
        "comment": "ticket OPS-12",
        "arguments_digest": arguments_digest(ARGS),
    }
    answer = client("rita").post(f"{URL}/{approval.pk}/decision", body, format="json")
    assert answer.status_code == 200, answer.content
    assert answer.json()["status"] == "approved"
    assert answer.json()["decided_by"] == "rita"
    assert answer.json()["comment"] == "ticket OPS-12"
    record = AuditRecord.objects.filter(call_id=approval.call_id).order_by("seq").last()
    assert (record.kind, record.actor, record.reason) == ("approval", "rita", "ticket OPS-12")
    assert record.diff == {"status": ["pending", "approved"]}
    # Decided once: a second decision is a conflict that says by whom.
    again = client("rita").post(
        f"{URL}/{approval.pk}/decision", {"decision": "deny"}, format="json"
    )
    assert again.status_code == 409
    assert again.json() == {"detail": "already approved by rita"}
    assert chain_verify(tenant=acme).ok


def test_a_decision_for_other_arguments_is_a_conflict(world):
    acme, _ = world
    approval = held(acme)
    answer = client("rita").post(
        f"{URL}/{approval.pk}/decision",
        {"decision": "approve", "arguments_digest": arguments_digest({**ARGS, "force": True})},
        format="json",
    )
    assert answer.status_code == 409
    assert "not this request's" in answer.json()["detail"]
    assert ApprovalRequest.objects.get(pk=approval.pk).status == "pending"


def test_four_eyes_the_agents_owner_may_deny_but_not_approve(world):
    acme, _ = world
    approval = held(acme)
    refused = client("olga").post(
        f"{URL}/{approval.pk}/decision", {"decision": "approve"}, format="json"
    )
    assert refused.status_code == 403
    assert refused.json()["detail"].startswith("four eyes: you are responsible for agent 'alice'")
    denied = client("olga").post(
        f"{URL}/{approval.pk}/decision", {"decision": "deny"}, format="json"
    )
    assert denied.json()["status"] == "denied"


def test_another_tenants_reviewer_sees_and_decides_nothing(world):
    acme, other = world
    approval = held(acme)
    theirs = held(other, agent_name="mallet")
    oscar = client("oscar")
    for url in (URL, f"{URL}/{approval.pk}"):
        assert oscar.get(url).status_code == 404
    decide = oscar.post(f"{URL}/{approval.pk}/decision", {"decision": "approve"}, format="json")
    assert decide.status_code == 404
    assert decide.json() == {"detail": "no tenant 'acme'"}
    # A request of another tenant, named under one's own tenant, does not exist there.
    rita = client("rita")
    assert rita.get(f"{URL}/{theirs.pk}").status_code == 404
    assert (
        rita.post(f"{URL}/{theirs.pk}/decision", {"decision": "deny"}, format="json").status_code
        == 404
    )
    assert [r["id"] for r in rita.get(URL).json()["results"]] == [str(approval.pk)]
    assert ApprovalRequest.objects.get(pk=theirs.pk).status == "pending"
    assert APIClient().get(URL).status_code == 401
