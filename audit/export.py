"""A streaming export of a tenant's filtered records, with the proof that they are genuine.

The format is ``chainproof``'s (``verify_export`` reads it; docs/api.md, "Audit API"): a header,
then every sequence number from the first matching record to the covering checkpoint, as the
record itself where it matches the filters and as its digest where it does not, then the
checkpoint. Rows are read raw by keyset chunks (``audit.rows``, as verification reads them)
and each chunk becomes one piece of the download, so memory stays flat however long the
range. Under ASGI, ``aiterate`` pulls each chunk from the database in the request's sync
thread: Django would otherwise buffer a sync iterator whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from asgiref.sync import sync_to_async
from django.db.models import BooleanField, Count, ExpressionWrapper, Max, Min, Value
from django.utils import timezone

from audit.chain import timestamp
from audit.chainproof import (
    CSV_COLUMNS,
    DOCUMENT_FIELDS,
    DOCUMENT_TYPES,
    EXPORT_FORMAT,
    GENESIS,
    checkpoint_message,
    csv_cell,
    document_digest,
    key_id,
)
from audit.models import AuditRecord, ChainHead, Checkpoint
from audit.rows import STORED_COLUMNS, raw_rows, stored_document
from audit.selectors import AuditFilters, audit_record_search
from audit.signing import public_key, sign
from governance.models import Tenant

CHUNK = 2000  # rows per database read, and per piece of the download
GAP_DIGESTS = 1000  # digests per gap line at most

ExportFormat = Literal["jsonl", "csv"]
CONTENT_TYPES: dict[str, str] = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}
# Whether the row matches the filters, its prev_hash and hash, then its document's columns.
_COLUMNS = ("matches", "prev_hash", "hash", *STORED_COLUMNS)

Entry = dict[str, Any]


class ExportInterrupted(Exception):
    """Records of the range vanished while it was streamed (retention pruned them)."""


@dataclass(frozen=True)
class Export:
    filename: str
    content_type: str
    chunks: Iterator[bytes]  # lazy: each piece is read from the database when asked for


def audit_export(*, tenant: Tenant, filters: AuditFilters, format: ExportFormat) -> Export:
    """The export of ``tenant``'s records matching ``filters``. The chain's head is read now, so
    records appended while it streams are left out; the range itself is read chunk by chunk."""
    header, end = _plan(tenant=tenant, filters=filters)
    entries = _entries(tenant=tenant, filters=filters, header=header, end=end)
    chunks = _csv_chunks(entries) if format == "csv" else _jsonl_chunks(entries)
    stamp = header["generated_at"][:19].replace("-", "").replace(":", "")
    return Export(
        filename=f"audit-{tenant.slug}-{stamp}Z.{format}",
        content_type=CONTENT_TYPES[format],
        chunks=chunks,
    )


async def aiterate(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` for an ASGI response: each one is made in the request's sync thread (where
    its database connection lives), one at a time, so none waits in memory."""
    pull = sync_to_async(next, thread_sensitive=True)
    while (chunk := await pull(chunks, None)) is not None:
        yield chunk


def _plan(*, tenant: Tenant, filters: AuditFilters) -> tuple[Entry, Entry]:
    """The header and the covering checkpoint: the first checkpoint at or after the last
    matching record (signed by the current key, so the usual public key verifies it), or else
    the signed head."""
    head = _head(tenant)
    matching = audit_record_search(tenant=tenant, filters=filters).filter(seq__lte=head["seq"])
    span = matching.aggregate(first=Min("seq"), last=Max("seq"), records=Count("id"))
    if span["first"] is None:
        # Nothing matched: an empty range just past the head, which the head's signature proves.
        first_seq, prev_hash, end = head["seq"] + 1, head["hash"], head
    else:
        first_seq = span["first"]
        first = AuditRecord.objects.filter(tenant=tenant, seq=first_seq)
        prev_hash = first.values_list("prev_hash", flat=True).get()
        checkpoint = (
            Checkpoint.objects.filter(
                tenant=tenant,
                seq__gte=span["last"],
                seq__lte=head["seq"],
                key_id=key_id(public_key()),
            )
            .order_by("seq", "id")
            .first()
        )
        end = _checkpoint_entry(checkpoint) if checkpoint else head
    header = {
        "line": "header",
        "format": EXPORT_FORMAT,
        "tenant": {"id": tenant.id, "slug": tenant.slug},
        "filters": filters.as_query(),
        "first_seq": first_seq,
        "prev_hash": prev_hash,
        "last_seq": end["seq"],
        "records": span["records"],
        "generated_at": timestamp(timezone.now()),
    }
    return header, end


def _head(tenant: Tenant) -> Entry:
    head = ChainHead.objects.filter(tenant=tenant).first()
    if head is not None:
        return _checkpoint_entry(head, reason="head")
    # No record was ever written: the empty chain, signed now.
    signed_at = timestamp(timezone.now())
    message = checkpoint_message(
        tenant=tenant.id, seq=0, hash=GENESIS, signed_at=signed_at, reason="head"
    )
    signer, signature = sign(message)
    return {
        "line": "checkpoint",
        "seq": 0,
        "hash": GENESIS,
        "signed_at": signed_at,
        "reason": "head",
        "key_id": signer,
        "signature": signature,
    }


def _checkpoint_entry(signed: Checkpoint | ChainHead, reason: str = "") -> Entry:
    return {
        "line": "checkpoint",
        "seq": signed.seq,
        "hash": signed.hash,
        "signed_at": signed.signed_at,
        "reason": reason or signed.reason,  # type: ignore[union-attr]
        "key_id": signed.key_id,
        "signature": signed.signature,
    }


def _entries(
    *, tenant: Tenant, filters: AuditFilters, header: Entry, end: Entry
) -> Iterator[list[Entry]]:
    """The export's entries, one list per chunk of rows."""
    yield [header]
    condition = filters.condition()
    matches = ExpressionWrapper(condition, BooleanField()) if condition else Value(True)
    rows = (
        AuditRecord.objects.filter(tenant=tenant, seq__lte=end["seq"])
        .annotate(matches=matches)
        .order_by("seq")
    )
    gap: list[str] = []
    expected = header["first_seq"]
    while expected <= end["seq"]:
        chunk = raw_rows(rows.filter(seq__gte=expected).values_list(*_COLUMNS)[:CHUNK])
        entries: list[Entry] = []
        for matches, prev_hash, stored_hash, *stored in chunk:
            document, floats = stored_document(stored)
            if document["seq"] != expected:
                raise ExportInterrupted(f"seq {expected} is gone: was it pruned meanwhile?")
            expected += 1
            if matches:
                if gap:
                    entries.append(_gap(gap, document["seq"]))
                    gap = []
                entries.append(
                    {"line": "record", **document, "prev_hash": prev_hash, "hash": stored_hash}
                )
            else:
                gap.append(document_digest(document, floats=floats).hex())
                if len(gap) == GAP_DIGESTS:
                    entries.append(_gap(gap, document["seq"] + 1))
                    gap = []
        if not chunk:
            raise ExportInterrupted(f"seq {expected} is gone: was it pruned meanwhile?")
        yield entries
    yield [_gap(gap, expected), end] if gap else [end]


def _gap(digests: list[str], next_seq: int) -> Entry:
    return {"line": "gap", "seq": next_seq - len(digests), "digests": digests}


def _jsonl_chunks(entries: Iterator[list[Entry]]) -> Iterator[bytes]:
    for batch in entries:
        yield b"".join(map(_json_line, batch))


def _json_line(entry: Entry) -> bytes:
    try:
        return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # an integer beyond 64 bits, or a lone surrogate: json writes both
        return json.dumps(entry).encode() + b"\n"


def _csv_chunks(entries: Iterator[list[Entry]]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    blank = [""] * (len(CSV_COLUMNS) - 2)
    for batch in entries:
        for entry in batch:
            kind = entry["line"]
            if kind == "record":
                cells = [csv_cell(entry[f], DOCUMENT_TYPES[f]) for f in DOCUMENT_FIELDS]
                writer.writerow(["record", *cells, entry["prev_hash"], entry["hash"], ""])
            else:
                proof = {k: v for k, v in entry.items() if k != "line"}
                writer.writerow([kind, *blank, json.dumps(proof, ensure_ascii=False)])
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
