"""Appending to the per-tenant hash chain, and signing its head (format: ``chainproof``).

Every audit record goes through ``chain_append``: the gateway's batching writer, the Celery
worker's slow-check verdicts, admin actions and retention. The tenant's ``ChainHead`` row is
locked first (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's single writer lock does the
same), so sequence numbers stay gap-free with any number of processes writing at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

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

    It speaks SQL on the DB-API cursor of the connection Django opened (same transaction,
    same PRAGMAs): on the gateway's hot path, the ORM's query building and Django's cursor
    wrappers cost more than the statements."""
    if not records:
        return
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("chain_append must run inside transaction.atomic()")
    sql = _Sql.of(connection)
    cursor = connection.connection.cursor()
    try:
        heads = _lock_heads(cursor, sql, {r.tenant_id for r in records})
        for record in records:
            head = heads[record.tenant_id]
            record.seq, record.prev_hash = head.seq + 1, head.hash
            record.hash = link(head.hash, document_digest(record_document(vars(record))))
            head.seq, head.hash = record.seq, record.hash
        _insert(cursor, sql, connection, records)
        for head in heads.values():
            sign_head(head)
        cursor.executemany(
            sql.update_head,
            [
                (h.seq, h.hash, h.signed_at, h.key_id, h.signature, h.tenant_id)
                for h in heads.values()
            ],
        )
    finally:
        cursor.close()


_FIELDS = [f for f in AuditRecord._meta.concrete_fields if not f.primary_key]
# Values that need the database's own form: JSON text or Jsonb, UUID hex on SQLite, naive UTC
# text on SQLite. Everything else goes as it is.
_PREPARED = {
    f.attname
    for f in _FIELDS
    if f.get_internal_type() in {"JSONField", "UUIDField", "DateTimeField"}
}
_ROWS_PER_INSERT = 32_000 // len(_FIELDS)  # under SQLite's and PostgreSQL's parameter limits


@dataclass(frozen=True)
class _Sql:
    """The statements, in the DB-API's own parameter style (``?`` for sqlite3, ``%s`` for
    psycopg), built once per database vendor."""

    mark: str
    heads: str
    records: str
    columns: str
    lock: str
    update_head: str

    _built: ClassVar[dict[str, _Sql]] = {}

    @classmethod
    def of(cls, connection: Any) -> _Sql:
        if (built := cls._built.get(connection.vendor)) is None:
            quote, mark = connection.ops.quote_name, "?" if connection.vendor == "sqlite" else "%s"
            heads = quote(ChainHead._meta.db_table)
            built = cls._built[connection.vendor] = cls(
                mark=mark,
                heads=heads,
                records=quote(AuditRecord._meta.db_table),
                columns=", ".join(quote(f.column) for f in _FIELDS),
                lock=" FOR UPDATE" if connection.features.has_select_for_update else "",
                update_head=f"UPDATE {heads} SET seq = {mark}, hash = {mark}, "  # noqa: S608
                f"signed_at = {mark}, key_id = {mark}, signature = {mark} "
                f"WHERE tenant_id = {mark}",
            )
        return built

    def marks(self, count: int) -> str:
        return ", ".join([self.mark] * count)


def _insert(cursor: Any, sql: _Sql, connection: Any, records: Sequence[AuditRecord]) -> None:
    """Multi-row INSERTs with RETURNING: what ``bulk_create`` stores, at a fraction of its
    cost, and each record learns its id in the same statement."""
    row = f"({sql.marks(len(_FIELDS))})"
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
            f"INSERT INTO {sql.records} ({sql.columns}) "  # noqa: S608 - own names
            f"VALUES {', '.join([row] * len(chunk))} RETURNING tenant_id, seq, id",
            values,
        )
        for tenant_id, seq, pk in cursor.fetchall():
            record = by_key[tenant_id, seq]
            record.pk = pk
            record._state.adding, record._state.db = False, connection.alias


@dataclass
class _Head:
    """A tenant's chain head as ``chain_append`` moves it (what ``sign_head`` signs)."""

    tenant_id: int
    seq: int
    hash: str
    signed_at: str = ""
    key_id: str = ""
    signature: str = ""


def _lock_heads(cursor: Any, sql: _Sql, tenant_ids: Iterable[int]) -> dict[int, _Head]:
    """The tenants' heads, locked in tenant order (no deadlock between two writers)."""
    ids = sorted(tenant_ids)
    select = (
        f"SELECT tenant_id, seq, hash FROM {sql.heads} "  # noqa: S608 - own names, int ids
        f"WHERE tenant_id IN ({sql.marks(len(ids))}) ORDER BY tenant_id{sql.lock}"
    )
    cursor.execute(select, ids)
    heads = {t: _Head(t, seq, h) for t, seq, h in cursor.fetchall()}
    missing = [ChainHead(tenant_id=t, seq=0, hash=GENESIS) for t in ids if t not in heads]
    if missing:
        ChainHead.objects.bulk_create(missing, ignore_conflicts=True)  # another may race us
        cursor.execute(select, ids)
        heads = {t: _Head(t, seq, h) for t, seq, h in cursor.fetchall()}
    return heads


def sign_head(head: ChainHead | _Head) -> None:
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
