"""The audit trail in the Django admin: read-only, a record shows its call's story, and admin
and approval records show who did what (actor, subject, diff)."""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from audit.chain import chain_append
from audit.models import AuditRecord
from audit.verify import chain_verify
from governance.models import Tenant
from governance.services.agents import agent_create, tenant_create
from governance.services.approvals import approval_decide, approval_request_create
from tests.audit.conftest import append, audit_record
from tests.audit.test_chain import record

pytestmark = pytest.mark.django_db


def test_a_record_shows_every_record_of_its_call_and_cannot_be_changed(admin_client):
    tenant = Tenant.objects.create(slug="acme")
    call = uuid.uuid4()
    story = [
        record(tenant, 1, call_id=call, kind="intent"),
        record(tenant, 2),  # another call, between them in the chain
        record(tenant, 3, call_id=call, kind="verdict", flagged=True),
        record(tenant, 4, call_id=call, kind="outcome", outcome="ok"),
    ]
    with transaction.atomic():
        chain_append(story)

    page = admin_client.get(f"/admin/audit/auditrecord/{story[3].pk}/change/").content.decode()
    assert "Records of this call" in page
    for mine in (story[0], story[2], story[3]):
        assert f"../../{mine.pk}/change/'>#{mine.seq}</a>" in page
    assert f">#{story[1].seq}</a>" not in page
    assert admin_client.get("/admin/audit/auditrecord/add/").status_code == 403
    assert admin_client.post(f"/admin/audit/auditrecord/{story[0].pk}/delete/").status_code == 403
    assert admin_client.get("/admin/audit/checkpoint/").status_code == 200
    assert admin_client.get("/admin/audit/chainhead/").status_code == 200


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def decided(django_user_model):
    """A call held for approval and approved by rita: its intent, then two approval records."""
    tenant = tenant_create(slug="acme")
    alice = agent_create(tenant=tenant, name="alice")
    call = uuid.uuid4()
    append(audit_record(tenant, call_id=call, decision="require_approval", tool="git__push"))
    approval = approval_request_create(
        tenant_id=tenant.id,
        agent_id=alice.id,
        agent_name="alice",
        call_id=call,
        tool="git__push",
        arguments={"branch": "main"},
        recorded_arguments={"branch": "main"},
        rule_id=None,
        reason="pushes need a second look",
        policy_version=tenant.version,
        node="gw-1",
        timeout_seconds=900,
        lease_seconds=30,
    )
    rita = django_user_model.objects.create_user("rita")
    return approval_decide(approval=approval, user=rita, approve=True, comment="fine by me")


def test_an_approval_record_shows_who_what_and_the_change_of_status(admin_client, decided):
    requested, approved = AuditRecord.objects.filter(kind="approval").order_by("seq")
    page = admin_client.get(f"/admin/audit/auditrecord/{approved.pk}/change/").content.decode()
    assert f"approval {decided.id}" in page  # the subject
    assert "<pre>{\n  &quot;status&quot;: [\n    &quot;pending&quot;," in page  # the diff
    assert "<td>rita</td>" in page  # who decided, in the call's records
    assert "<td>pending → approved</td>" in page
    assert "<td>requested (pending)</td>" in page
    assert "<td>alice</td>" in page  # who asked: the agent
    assert "fine by me" in page

    listed = admin_client.get("/admin/audit/auditrecord/", {"kind__exact": "approval"})
    assert list(listed.context["cl"].result_list) == [approved, requested]
    assert "pending → approved" in listed.content.decode()


def test_an_admin_record_shows_its_subject_and_action_in_the_list(admin_client, decided):
    listed = admin_client.get("/admin/audit/auditrecord/", {"kind__exact": "admin"})
    page = listed.content.decode()
    agent = decided.agent
    assert f"governance.agent {agent.id} &#x27;acme/alice&#x27;" in page  # as tool / subject
    assert '<td class="field-result">created</td>' in page
    record = AuditRecord.objects.filter(kind="admin", subject__startswith="governance.agent").get()
    detail = admin_client.get(f"/admin/audit/auditrecord/{record.pk}/change/").content.decode()
    assert "&quot;name&quot;: [\n    null,\n    &quot;alice&quot;\n  ]" in detail


def test_no_record_of_any_kind_can_be_changed_or_deleted(admin_client, decided):
    for one in AuditRecord.objects.all():
        change = f"/admin/audit/auditrecord/{one.pk}/change/"
        view = admin_client.get(change)
        assert view.status_code == 200
        assert not view.context["adminform"].form.fields
        assert 'name="_save"' not in view.content.decode()
        assert admin_client.post(change, {"actor": "mallory"}).status_code == 403
        delete = f"/admin/audit/auditrecord/{one.pk}/delete/"
        assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    changelist = admin_client.get("/admin/audit/auditrecord/")
    assert changelist.context["action_form"] is None  # no bulk delete either
    assert chain_verify(tenant=decided.tenant).ok
