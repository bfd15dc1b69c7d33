from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from audit.chain import chain_append
from audit.models import AuditRecord
from governance.models import Tenant
from governance.services.agents import tenant_create


@pytest.fixture
def tenant() -> Tenant:
    return tenant_create(slug="acme")


@pytest.fixture
def other() -> Tenant:
    return tenant_create(slug="globex")


@pytest.fixture
def api(admin_user) -> APIClient:
    client = APIClient()
    client.force_login(admin_user)
    return client


def audit_record(tenant: Tenant, **fields: Any) -> AuditRecord:
    """An unsaved intent record of ``tenant``, with ``fields`` overriding the defaults."""
    at: datetime = fields.pop("at", None) or timezone.now()
    values: dict[str, Any] = {
        "call_id": uuid.uuid4(),
        "kind": "intent",
        "agent_name": "alice",
        "agent_id": 1,
        "transport": "ws",
        "protocol_era": "handshake",
        "protocol_version": "2025-11-25",
        "tool": "git__status",
        "arguments": {"path": "/srv/repo"},
        "decision": "allow",
        "reason": "allowed by rule 1",
        "started_at": at - timedelta(microseconds=250),
        "created_at": at,
    }
    return AuditRecord(tenant=tenant, **(values | fields))


def append(*records: AuditRecord) -> list[AuditRecord]:
    """Chain and insert ``records``, as the gateway does."""
    with transaction.atomic():
        chain_append(list(records))
    return list(records)
