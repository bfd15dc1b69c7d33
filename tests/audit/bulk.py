"""Many properly chained audit records, fast, for tests and benchmarks of volume."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.db import connection

from audit.chain import record_document, sign_head
from audit.chainproof import GENESIS, canonical, link
from audit.models import AuditRecord, ChainHead
from governance.models import Tenant


def chain_bulk(tenant: Tenant, count: int, *, batch: int = 50_000) -> None:
    """``count`` properly chained records of ``tenant``, fast: the chain computed here as
    ``chain_append`` does, rows inserted by ``executemany``; then the signed head. Even seqs
    are agent "even", odd ones "odd"."""
    fields = [f for f in AuditRecord._meta.concrete_fields if f.name != "id"]
    names = [f.attname for f in fields]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    table = connection.ops.quote_name(AuditRecord._meta.db_table)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608 - our own names
    values: dict[str, Any] = {
        "tenant_id": tenant.id,
        "kind": "outcome",
        "agent_id": None,
        "transport": "http",
        "protocol_era": "stateless",
        "protocol_version": "2026-07-28",
        "request_id": "",
        "tool": "git__log",
        "decision": "allow",
        "reason": "allowed by rule 1 (git on /srv/repos only)",
        "rule_id": 1,
        "shadow": {},
        "policy_version": 7,
        "guardrails": [
            {"check": "secrets", "stage": "input", "action": "block", "verdict": "pass"}
        ],
        "flagged": False,
        "outcome": "ok",
        "error": "",
        "result_digest": "ab" * 32,
        "actor": "",
        "subject": "",
        "diff": {},
    }
    # Each row starts as the constant columns, prepared once for the database.
    template = [
        f.get_db_prep_save(values[f.attname], connection) if f.attname in values else None
        for f in fields
    ]
    at = {name: names.index(name) for name in names}
    uuid_db = (lambda u: u) if connection.features.has_native_uuid_field else (lambda u: u.hex)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    prev = GENESIS
    with connection.cursor() as cursor:
        for start in range(1, count + 1, batch):
            rows = []
            for seq in range(start, min(start + batch, count + 1)):
                created = base + timedelta(milliseconds=seq)
                values["seq"], values["call_id"] = seq, uuid.UUID(int=seq)
                values["agent_name"] = "odd" if seq % 2 else "even"
                values["arguments"] = {"path": f"/srv/repos/r{seq % 97}", "max_count": seq % 50}
                values["started_at"] = created - timedelta(microseconds=900)
                values["created_at"] = created
                values["latency_us"], values["prev_hash"] = 850 + seq % 100, prev
                # document_digest, minus its walk for floats: we know there are none.
                digest = hashlib.sha256(canonical(record_document(values), floats=False))
                prev = values["hash"] = link(prev, digest.digest())
                row = template.copy()
                for name in ("seq", "agent_name", "latency_us", "prev_hash", "hash"):
                    row[at[name]] = values[name]
                row[at["call_id"]] = uuid_db(values["call_id"])
                # Cheaper than the fields' own preparation, and the same: JSON text, and
                # naive UTC times (as SQLite stores them; PostgreSQL's session is in UTC).
                row[at["arguments"]] = orjson.dumps(values["arguments"]).decode()
                row[at["started_at"]] = str(values["started_at"].replace(tzinfo=None))
                row[at["created_at"]] = str(created.replace(tzinfo=None))
                rows.append(row)
            cursor.executemany(sql, rows)
    head = ChainHead(tenant=tenant, seq=count, hash=prev)
    sign_head(head)
    head.save()
