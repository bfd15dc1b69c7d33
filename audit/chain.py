"""Appending to the per-tenant hash chain, and signing its head (format: ``chainproof``).

Every audit record goes through ``chain_append``: the gateway's batching writer, the Celery
worker's slow-check verdicts, admin actions and retention. The tenant's ``ChainHead`` row is
locked first (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's single writer lock does the
same), so sequence numbers stay gap-free with any number of processes writing at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.chainproof import (
    DOCUMENT_FIELDS,
    GENESIS,
    checkpoint_message,
    document_digest,
    link,
)
from audit.models import AuditRecord, ChainHead
from audit.signing import sign


def timestamp(moment: datetime) -> str:
    """A stored time as the chain writes it. Naive means UTC (SQLite's raw rows)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"  # = TIMESTAMP_FORMAT, 4x faster


# Each document field and the model attribute it comes from.
_ATTRIBUTES = tuple((f, "tenant_id" if f == "tenant" else f) for f in DOCUMENT_FIELDS)
RECORD_ATTRIBUTES = tuple(attr for _, attr in _ATTRIBUTES)


def record_document(values: Mapping[str, Any]) -> dict[str, Any]:
    """What a record's hash covers, from its values by attribute name: ``vars(record)``, or a
    ``.values(*RECORD_ATTRIBUTES)`` row."""
    document = {field: values[attr] for field, attr in _ATTRIBUTES}
    document["call_id"] = str(document["call_id"])
    document["started_at"] = timestamp(document["started_at"])
    document["created_at"] = timestamp(document["created_at"])
    return document


def chain_append(records: Sequence[AuditRecord]) -> None:
    """Chain ``records`` (in this order, per tenant) and insert them. Call it inside the
    transaction that must hold them: they commit, or roll back, with it.

    It speaks SQL through the connection Django opened (same transaction, same PRAGMAs): on
    the gateway's hot path the ORM's query building cost more than the statements."""
    if not records:
        return
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("chain_append must run inside transaction.atomic()")
    with connection.cursor() as cursor:
        heads = _lock_heads(cursor, {r.tenant_id for r in records})
        for record in records:
            head = heads[record.tenant_id]
            record.seq, record.prev_hash = head.seq + 1, head.hash
            record.hash = link(head.hash, document_digest(record_document(vars(record))))
            head.seq, head.hash = record.seq, record.hash
        _insert(cursor, records)
        for head in heads.values():
            sign_head(head)
        cursor.executemany(
            f"UPDATE {_HEADS} SET seq = %s, hash = %s, signed_at = %s, key_id = %s, "  # noqa: S608
            "signature = %s WHERE tenant_id = %s",
            [
                (h.seq, h.hash, h.signed_at, h.key_id, h.signature, h.tenant_id)
                for h in heads.values()
            ],
        )


_HEADS, _RECORDS = ChainHead._meta.db_table, AuditRecord._meta.db_table
_FIELDS = [f for f in AuditRecord._meta.concrete_fields if not f.primary_key]
# Values that need the database's own form: JSON text or Jsonb, UUID hex on SQLite, naive UTC
# text on SQLite. Everything else goes as it is.
_PREPARED = {
    f.attname
    for f in _FIELDS
    if f.get_internal_type() in {"JSONField", "UUIDField", "DateTimeField"}
}
_ROWS_PER_INSERT = 32_000 // len(_FIELDS)  # under SQLite's and PostgreSQL's parameter limits
_ROW_MARKS = "({})".format(", ".join(["%s"] * len(_FIELDS)))

_COLUMNS: dict[str, str] = {}  # the quoted column list, by database vendor


def _insert(cursor: Any, records: Sequence[AuditRecord]) -> None:
    """Multi-row INSERTs with RETURNING: what ``bulk_create`` stores, at a fraction of its
    cost, and each record learns its id in the same statement."""
    connection = cursor.db
    columns = _COLUMNS.get(connection.vendor) or _COLUMNS.setdefault(
        connection.vendor, ", ".join(connection.ops.quote_name(f.column) for f in _FIELDS)
    )
    row_marks = _ROW_MARKS
    by_key = {(r.tenant_id, r.seq): r for r in records}
    for start in range(0, len(records), _ROWS_PER_INSERT):
        chunk = records[start : start + _ROWS_PER_INSERT]
        values: list[Any] = []
        for r in chunk:
            values.extend(
                f.get_db_prep_save(getattr(r, f.attname), connection)
                if f.attname in _PREPARED
                else getattr(r, f.attname)
                for f in _FIELDS
            )
        cursor.execute(
            f"INSERT INTO {_RECORDS} ({columns}) "  # noqa: S608 - own names
            f"VALUES {', '.join([row_marks] * len(chunk))} RETURNING tenant_id, seq, id",
            values,
        )
        for tenant_id, seq, pk in cursor.fetchall():
            record = by_key[tenant_id, seq]
            record.pk = pk
            record._state.adding, record._state.db = False, connection.alias


def _lock_heads(cursor: Any, tenant_ids: Iterable[int]) -> dict[int, ChainHead]:
    """The tenants' heads, locked in tenant order (no deadlock between two writers)."""
    ids = sorted(tenant_ids)
    lock = " FOR UPDATE" if cursor.db.features.has_select_for_update else ""
    sql = (
        f"SELECT tenant_id, seq, hash FROM {_HEADS} "  # noqa: S608 - own names, int ids
        f"WHERE tenant_id IN ({', '.join(['%s'] * len(ids))}) ORDER BY tenant_id{lock}"
    )
    cursor.execute(sql, ids)
    heads = {t: ChainHead(tenant_id=t, seq=seq, hash=h) for t, seq, h in cursor.fetchall()}
    missing = [ChainHead(tenant_id=t, seq=0, hash=GENESIS) for t in ids if t not in heads]
    if missing:
        ChainHead.objects.bulk_create(missing, ignore_conflicts=True)  # another may race us
        cursor.execute(sql, ids)
        heads = {t: ChainHead(tenant_id=t, seq=seq, hash=h) for t, seq, h in cursor.fetchall()}
    return heads


def sign_head(head: ChainHead) -> None:
    head.signed_at = timestamp(timezone.now())
    head.key_id, head.signature = sign(
        checkpoint_message(
            tenant=head.tenant_id,
            seq=head.seq,
            hash=head.hash,
            signed_at=head.signed_at,
            reason="head",
        )
    )
