"""Verification of the stored chains: every record, link, checkpoint and head.

Reads records in sequence order, a chunk at a time, and reports the first broken link of a
tenant's chain precisely: which sequence number, which record, and what is wrong with it.
"""

from __future__ import annotations

import itertools
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django.db.models import Max

from audit.chainproof import (
    GENESIS,
    checkpoint_message,
    document_digest,
    link,
    signature_valid,
)
from audit.models import AuditRecord, ChainHead, Checkpoint
from audit.rows import STORED_COLUMNS, raw_rows, stored_document
from audit.signing import trusted_keys
from governance.models import Tenant

CHUNK = 5000

# id, prev_hash, hash, then the document's columns (audit/rows.py).
_COLUMNS = ("id", "prev_hash", "hash", *STORED_COLUMNS)


@dataclass(frozen=True)
class Break:
    """The first broken link of a chain."""

    seq: int
    record_id: int | None
    problem: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" + (f" (record id {self.record_id})" if self.record_id else "")
        return f"{where}: {self.problem}"


@dataclass
class ChainReport:
    tenant: str
    records: int = 0
    first_seq: int = 0
    last_seq: int = 0
    checkpoints: int = 0
    broken: Break | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken is None


def chain_verify(*, tenant: Tenant, jobs: int = 1) -> ChainReport:
    """Verify the tenant's chain; ``jobs`` processes share the records (the links where their
    parts meet are checked here)."""
    report = ChainReport(tenant=tenant.slug)
    keys = trusted_keys()
    checkpoints = list(Checkpoint.objects.filter(tenant=tenant).order_by("seq", "id"))
    for cp in checkpoints:
        if not _signed(cp, keys):
            problem = f"checkpoint {cp.id} ({cp.reason}): {_why(cp, keys)}"
            report.broken = Break(cp.seq, None, problem)
            return report
    report.checkpoints = len(checkpoints)
    anchors = [cp for cp in checkpoints if cp.reason == Checkpoint.Reason.RETENTION]
    anchor = anchors[-1] if anchors else None
    prev, start = (anchor.hash, anchor.seq + 1) if anchor else (GENESIS, 1)
    report.first_seq = start
    records = AuditRecord.objects.filter(tenant=tenant)
    early = records.filter(seq__lt=start).order_by("seq").values_list("seq", "id").first()
    if early is not None:
        report.broken = Break(*early, f"precedes the retention checkpoint at seq {start - 1}")
        return report
    last = records.aggregate(last=Max("seq"))["last"] or start - 1
    signed = {cp.seq: (cp.id, cp.signed_at, cp.hash) for cp in checkpoints if cp.seq >= start}
    parts = _parts(start - 1, last, jobs)
    tasks = [
        (tenant.id, after, upto, prev if i == 0 else None, anchor is not None, signed)
        for i, (after, upto) in enumerate(parts)
    ]
    for i, ((after, _), part) in enumerate(zip(parts, _run(tasks, jobs), strict=True)):
        if i and part.first_prev is not None and part.first_prev != prev:
            report.broken = Break(after + 1, part.first_id, _LINK_PROBLEM.format(seq=after))
        else:
            report.broken = part.broken
        if report.broken is not None:
            return report
        report.records += part.records
        prev = part.last_hash
    report.last_seq = last

    beyond = [cp for cp in checkpoints if cp.seq > last]
    if beyond:
        cp = beyond[-1]
        report.broken = Break(
            last + 1,
            None,
            f"missing: checkpoint {cp.id} signed seq {cp.seq} at {cp.signed_at}, but the chain "
            f"ends at seq {last} (records {last + 1}..{cp.seq} were removed)",
        )
        return report
    report.broken = _head_break(tenant, last, prev, keys)
    return report


_LINK_PROBLEM = (
    "its prev_hash does not match the hash of seq {seq}: a record before it was changed, "
    "inserted, removed or moved"
)


@dataclass(frozen=True)
class _Part:
    """What one process found in its part of the chain."""

    records: int
    first_id: int | None  # the part's first record, when it has the expected seq
    first_prev: str | None  # its prev_hash, for the link to the part before (checked above)
    last_hash: str
    broken: Break | None


def _parts(after: int, last: int, jobs: int) -> list[tuple[int, int]]:
    """Split seq after+1..last into ``jobs`` ranges (one when small)."""
    count = last - after
    if count <= 0:
        return []
    n = max(1, min(jobs, count // (2 * CHUNK)))
    bounds = [after + count * i // n for i in range(n + 1)]
    return list(itertools.pairwise(bounds))


def _run(tasks: list[tuple[Any, ...]], jobs: int) -> list[_Part]:
    if jobs <= 1 or len(tasks) <= 1:
        return [_verify_part(*task) for task in tasks]
    # Forked children must open their own connections: none may be inherited, pooled or not
    # (two processes on one PostgreSQL socket lose the protocol's synchronization).
    for connection in connections.all(initialized_only=True):
        connection.close()
        if hasattr(connection, "close_pool"):
            connection.close_pool()
    with multiprocessing.get_context("fork").Pool(len(tasks)) as pool:
        return pool.starmap(_verify_part, tasks)


def _verify_part(
    tenant_id: int,
    after: int,
    upto: int,
    prev: str | None,
    anchored: bool,
    signed: dict[int, tuple[int, str, str]],
) -> _Part:
    """Verify records after+1..upto. ``prev`` is the hash before them, or None for a part
    that starts where another process's part ends (its first link is checked by the caller)."""
    expected, count = after + 1, 0
    first_id: int | None = None
    first_prev = last_hash = ""
    for row in _rows(tenant_id, after, upto):
        record_id, prev_hash, stored_hash, seq = row[:4]
        broken = None
        if seq != expected:
            broken = _missing(seq, expected, anchored)
        elif count == 0:
            first_id, first_prev = record_id, prev_hash
            prev = prev_hash if prev is None else prev
        if broken is None and prev_hash != prev:
            problem = _LINK_PROBLEM.format(seq=seq - 1)
            if seq == 1:
                problem = "the first record does not start from the genesis hash"
            broken = Break(seq, record_id, problem)
        if broken is None:
            document, floats = stored_document(row[3:])
            computed = link(prev_hash, document_digest(document, floats=floats))
            if stored_hash != computed:
                broken = Break(seq, record_id, "its content does not match its hash: edited")
            elif seq in signed and signed[seq][2] != computed:
                cp_id, signed_at, _ = signed[seq]
                broken = Break(
                    seq,
                    record_id,
                    f"differs from checkpoint {cp_id} signed at {signed_at}: the chain up to "
                    "here was rewritten",
                )
        if broken is not None:
            return _Part(count, first_id, first_prev or None, last_hash, broken)
        prev = last_hash = stored_hash
        expected, count = seq + 1, count + 1
    broken = _missing(upto + 1, expected, anchored) if expected <= upto else None
    return _Part(count, first_id, first_prev or None, last_hash, broken)


def _missing(seq: int, expected: int, anchored: bool) -> Break:
    if expected == 1 and not anchored:
        problem = (
            f"missing: the chain starts at seq {seq} and no retention checkpoint covers "
            f"seq 1..{seq - 1}"
        )
    else:
        problem = f"missing: seq {expected - 1} is followed by seq {seq}"
    return Break(expected, None, problem)


def _head_break(tenant: Tenant, last: int, last_hash: str, keys: dict[str, bytes]) -> Break | None:
    head = ChainHead.objects.filter(tenant=tenant).first()
    if head is None:
        if last == 0:
            return None
        return Break(last, None, "the chain has no signed head: it was not written by a gateway")
    if not _signed(head, keys, reason="head"):
        return Break(head.seq, None, f"the chain head: {_why(head, keys)}")
    if head.seq > last:
        return Break(
            last + 1,
            None,
            f"missing: the signed head is at seq {head.seq} but the chain ends at seq {last} "
            f"(records {last + 1}..{head.seq} were removed)",
        )
    if head.seq < last:
        extra = AuditRecord.objects.filter(tenant=tenant, seq=head.seq + 1).first()
        return Break(
            head.seq + 1,
            extra.id if extra else None,
            f"comes after the signed head (seq {head.seq}): not written by a gateway",
        )
    if head.hash != last_hash:
        return Break(last, None, "differs from the signed head: the chain was rewritten")
    return None


def _signed(signed: Checkpoint | ChainHead, keys: dict[str, bytes], reason: str = "") -> bool:
    key = keys.get(signed.key_id)
    if key is None:
        return False
    message = checkpoint_message(
        tenant=signed.tenant_id,
        seq=signed.seq,
        hash=signed.hash,
        signed_at=signed.signed_at,
        reason=reason or signed.reason,  # type: ignore[union-attr]
    )
    return signature_valid(key, message, signed.signature)


def _why(signed: Checkpoint | ChainHead, keys: dict[str, bytes]) -> str:
    if signed.key_id not in keys:
        return f"signed by unknown key {signed.key_id!r} (see AUDIT_TRUSTED_KEYS)"
    return "its signature is not valid: it was altered"


def _rows(tenant_id: int, after: int, upto: int) -> Iterator[tuple[Any, ...]]:
    """The tenant's raw rows (``_COLUMNS``) in sequence order, by keyset chunks: bounded
    memory, no long-lived cursor."""
    while True:
        query = (
            AuditRecord.objects.filter(tenant_id=tenant_id, seq__gt=after, seq__lte=upto)
            .order_by("seq")
            .values_list(*_COLUMNS)[:CHUNK]
        )
        chunk = raw_rows(query)
        yield from chunk
        if len(chunk) < CHUNK:
            return
        after = chunk[-1][3]
