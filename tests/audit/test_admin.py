"""The audit trail in the Django admin: read-only, and a record shows its call's story."""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from audit.chain import chain_append
from governance.models import Tenant
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
