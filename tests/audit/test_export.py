"""The streaming export: its format, its proof, the stand-alone verifier, and flat memory."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from audit.chain import RECORD_ATTRIBUTES, record_document
from audit.chainproof import (
    DOCUMENT_FIELDS,
    GENESIS,
    ExportBroken,
    b64encode,
    document_digest,
    read_csv,
    read_jsonl,
    verify_export,
)
from audit.export import ExportInterrupted, audit_export
from audit.models import AuditRecord, ChainHead, Checkpoint
from audit.selectors import AuditFilters
from audit.services import checkpoint_create
from audit.signing import public_key
from governance.models import Tenant
from tests.audit.bulk import chain_bulk
from tests.audit.conftest import append, audit_record

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "audit" / "chainproof.py"


def export_bytes(tenant: Tenant, format: str = "jsonl", **filters: Any) -> bytes:
    return b"".join(
        audit_export(tenant=tenant, filters=AuditFilters(**filters), format=format).chunks
    )


def entries(data: bytes, format: str = "jsonl") -> list[dict[str, Any]]:
    text = io.StringIO(data.decode(), newline="")
    return list(read_csv(text) if format == "csv" else read_jsonl(text))


def verify(data: bytes, format: str = "jsonl") -> Any:
    text = io.StringIO(data.decode(), newline="")
    return verify_export(read_csv(text) if format == "csv" else read_jsonl(text), public_key())


def run_script(path: Path) -> subprocess.CompletedProcess[str]:
    """The stand-alone verifier, as an auditor runs it: outside Django, on the file."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(path), f"--public-key={b64encode(public_key())}"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "")},  # no DJANGO_SETTINGS_MODULE, no PYTHONPATH
    )


@pytest.fixture
def mixed(tenant: Tenant, other: Tenant) -> list[AuditRecord]:
    """Ten records of acme by alice and bob in turn (bob's denied), interleaved with globex's."""
    records = []
    for n in range(10):
        agent = "alice" if n % 2 == 0 else "bob"
        decision = "allow" if agent == "alice" else "deny"
        records += append(
            audit_record(tenant, agent_name=agent, decision=decision, arguments={"n": n}),
            audit_record(other, agent_name=agent, tool="secret__tool"),
        )
    return [r for r in records if r.tenant_id == tenant.id]


# --- the format --------------------------------------------------------------------------------
@pytest.mark.parametrize("format", ["jsonl", "csv"])
def test_a_filtered_export_holds_the_matches_and_the_digests_between(tenant, mixed, format):
    data = export_bytes(tenant, format, agent="bob")
    lines = entries(data, format)
    header, body, end = lines[0], lines[1:-1], lines[-1]
    bobs = [r for r in mixed if r.agent_name == "bob"]
    assert header["line"] == "header"
    assert header["tenant"] == {"id": tenant.id, "slug": "acme"}
    assert header["filters"] == {"agent": "bob"}
    assert header["first_seq"] == bobs[0].seq
    assert header["prev_hash"] == bobs[0].prev_hash
    assert header["records"] == 5
    assert header["last_seq"] == end["seq"] == mixed[-1].seq  # the head: no checkpoint yet
    assert [e["line"] for e in body] == ["record", "gap"] * 4 + ["record"]
    assert [e["seq"] for e in body if e["line"] == "record"] == [r.seq for r in bobs]
    for e in body:
        if e["line"] == "gap":
            alice = AuditRecord.objects.get(tenant=tenant, seq=e["seq"])
            row = AuditRecord.objects.filter(pk=alice.pk).values(*RECORD_ATTRIBUTES).get()
            assert e["digests"] == [document_digest(record_document(row)).hex()]
    first = body[0]
    assert {k: first[k] for k in DOCUMENT_FIELDS} == record_document(vars(bobs[0]))
    assert (first["prev_hash"], first["hash"]) == (bobs[0].prev_hash, bobs[0].hash)
    head = ChainHead.objects.get(tenant=tenant)
    assert end == {
        "line": "checkpoint",
        "seq": head.seq,
        "hash": head.hash,
        "signed_at": head.signed_at,
        "reason": "head",
        "key_id": head.key_id,
        "signature": head.signature,
    }
    report = verify(data, format)
    assert report.ok, report.message
    assert (report.records, report.gaps) == (5, 4)
    assert report.message.startswith(
        f"OK: 5 records and 4 digests chain to the checkpoint at seq {head.seq}, signed by key"
    )


def test_an_unfiltered_export_holds_every_record_and_no_gap(tenant, mixed):
    data = export_bytes(tenant)
    body = entries(data)[1:-1]
    # From seq 1: the tenant's creation is audited too (admin records).
    assert [e["seq"] for e in body] == list(range(1, mixed[-1].seq + 1))
    assert {e["line"] for e in body} == {"record"}
    assert entries(data)[0]["prev_hash"] == GENESIS
    assert verify(data).ok


def test_another_tenants_records_never_appear(tenant, other, mixed):
    data = export_bytes(tenant, tool="secret__tool")  # globex's tool: nothing of acme's
    assert [e["line"] for e in entries(data)] == ["header", "checkpoint"]
    theirs = export_bytes(other)
    assert {e.get("tenant") for e in entries(theirs)[1:-1]} == {other.id}
    assert verify(theirs).ok


def test_each_filter_selects_the_same_records_as_the_search(tenant, mixed):
    # The export's "matches" is the search's condition: compare for a combination of filters.
    data = export_bytes(tenant, decision="deny", q='N": 3')
    records = [e for e in entries(data) if e["line"] == "record"]
    assert [r["seq"] for r in records] == [mixed[3].seq]
    assert verify(data).ok


def test_the_covering_checkpoint_is_the_first_after_the_last_match(tenant, mixed):
    checkpoint = checkpoint_create(tenant=tenant)
    later = append(*(audit_record(tenant, agent_name="carol") for _ in range(3)))
    checkpoint_create(tenant=tenant)
    data = export_bytes(tenant, agent="bob")
    lines = entries(data)
    assert lines[0]["last_seq"] == checkpoint.seq == mixed[-1].seq
    assert lines[-1]["reason"] == "manual"
    assert lines[-1]["seq"] == checkpoint.seq
    assert lines[-1]["signature"] == checkpoint.signature
    assert verify(data).ok
    # carol's records came after it: the next checkpoint covers them.
    carols = entries(export_bytes(tenant, agent="carol"))
    assert carols[-1]["seq"] == later[-1].seq
    assert carols[-1]["reason"] == "manual"


def test_a_checkpoint_signed_by_an_old_key_is_passed_over_for_the_head(tenant, mixed):
    checkpoint = checkpoint_create(tenant=tenant)
    Checkpoint.objects.filter(pk=checkpoint.pk).update(key_id="0123456789abcdef")
    append(audit_record(tenant, agent_name="carol"))
    lines = entries(export_bytes(tenant, agent="bob"))
    assert lines[-1]["reason"] == "head"
    assert lines[-1]["seq"] == mixed[-1].seq + 1


def test_records_appended_while_it_streams_are_left_out(tenant, mixed):
    export = audit_export(tenant=tenant, filters=AuditFilters(), format="jsonl")
    append(audit_record(tenant, agent_name="late"))
    data = b"".join(export.chunks)
    assert b'"late"' not in data
    assert entries(data)[-1]["seq"] == mixed[-1].seq
    assert verify(data).ok


def test_records_pruned_while_it_streams_stop_the_export(tenant, mixed):
    export = audit_export(tenant=tenant, filters=AuditFilters(agent="bob"), format="jsonl")
    next(export.chunks)  # the header
    AuditRecord.objects.filter(tenant=tenant, seq__lte=mixed[3].seq).prune()
    with pytest.raises(ExportInterrupted, match=f"seq {mixed[1].seq} is gone"):
        next(export.chunks)


def test_unusual_values_survive_both_formats(tenant):
    arguments = {
        "float": 0.1,
        "big": 2**70,
        "huge": 1e22,
        "text": 'naïve ☃ 𝄞 "quoted"\nnew line, comma',
        "lone": "\ud800",  # JSON allows it; only the careful encoders write it
        "nested": [{"b": 1, "a": [None, True, False]}],
    }
    admin = {"kind": "admin", "actor": "root", "subject": "governance.rule 1", "tool": ""}
    append(
        audit_record(tenant, **admin, diff={"x": [1, 2]}),
        audit_record(tenant, arguments=arguments, error='a,b\r\n"c"', agent_id=None),
        audit_record(tenant, **admin, diff={"é": None}),
    )
    for format in ("jsonl", "csv"):
        data = export_bytes(tenant, format, tool="git__status")  # as a record line
        report = verify(data, format)
        assert report.ok, (format, report.message)
        assert entries(data, format)[1]["arguments"] == arguments
        assert entries(data, format)[1]["error"] == 'a,b\r\n"c"'
        data = export_bytes(tenant, format, kind="admin")  # as a digest
        report = verify(data, format)
        assert report.ok, (format, report.message)
        assert report.gaps == 1


# --- empty exports -----------------------------------------------------------------------------
def test_an_export_with_no_match_is_the_signed_head_alone(tenant, mixed):
    data = export_bytes(tenant, agent="nobody")
    header, end = entries(data)
    head = ChainHead.objects.get(tenant=tenant)
    assert header["records"] == 0
    assert (header["first_seq"], header["last_seq"]) == (head.seq + 1, head.seq)
    assert header["prev_hash"] == head.hash
    assert (end["reason"], end["seq"], end["hash"]) == ("head", head.seq, head.hash)
    report = verify(data)
    assert report.ok
    assert report.message.startswith(
        f"OK: no records matched; the range is empty up to the checkpoint at seq {head.seq}"
    )


def test_a_tenant_without_records_exports_its_empty_chain_signed_now():
    tenant = Tenant.objects.create(slug="blank")  # not tenant_create: that is audited
    for format in ("jsonl", "csv"):
        data = export_bytes(tenant, format)
        header, end = entries(data, format)
        assert (header["first_seq"], header["prev_hash"], header["records"]) == (1, GENESIS, 0)
        assert (end["seq"], end["hash"], end["reason"]) == (0, GENESIS, "head")
        assert verify(data, format).ok


# --- tampering ---------------------------------------------------------------------------------
def edit(data: bytes, index: int, change: Any) -> bytes:
    """``data`` (JSONL) with entry ``index`` changed by ``change(entry)`` (None drops it)."""
    lines = [json.loads(line) for line in data.splitlines()]
    changed = change(lines[index])
    if changed is None:
        del lines[index]
    else:
        lines[index] = changed
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def find(data: bytes, kind: str) -> int:
    return next(i for i, e in enumerate(entries(data)) if e["line"] == kind)


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (
            lambda d: edit(d, find(d, "record"), lambda e: e | {"tool": "rm__rf"}),
            "record seq {b}: its content does not match its hash",
        ),
        (
            lambda d: edit(d, find(d, "record"), lambda e: e | {"seq": e["seq"] + 1}),
            "record seq {b1}: expected seq {b}",
        ),
        (lambda d: edit(d, find(d, "record"), lambda e: None), "gap at seq {b1}: expected seq {b}"),
        (lambda d: edit(d, find(d, "gap"), lambda e: None), "record seq {b2}: expected seq {b1}"),
        (lambda d: edit(d, 0, lambda e: None), "not an audit export"),
        (
            lambda d: edit(d, -1, lambda e: None),
            "the export ends at seq {last} without its checkpoint",
        ),
        (
            lambda d: edit(d, find(d, "gap"), lambda e: e | {"digests": ["00" * 32]}),
            "record seq {b2}: prev_hash does not match the hash before it",
        ),
        (
            lambda d: edit(d, -1, lambda e: e | {"signature": e["signature"][:-4] + "AAAA"}),
            "the checkpoint at seq {last} is not signed by key",
        ),
        (
            lambda d: edit(d, -1, lambda e: e | {"signed_at": "2020-01-01T00:00:00.000000Z"}),
            "the checkpoint at seq {last} is not signed by key",
        ),
        (
            lambda d: edit(d, 0, lambda e: e | {"records": 4}),
            "the header announces 4 records, but the export holds 5",
        ),
        (
            lambda d: edit(
                d, find(d, "record"), lambda e: {k: v for k, v in e.items() if k != "hash"}
            ),
            "entry 2 is malformed: no 'hash'",
        ),
        (lambda d: d[:-40], "line 11 is not JSON"),
    ],
)
def test_a_tampered_export_fails_and_names_the_place(tenant, mixed, tamper, message, tmp_path):
    data = export_bytes(tenant, agent="bob")
    assert verify(data).ok
    b = mixed[1].seq  # bob's first record: then a gap (alice), and so on
    message = message.format(b=b, b1=b + 1, b2=b + 2, last=mixed[-1].seq)
    tampered = tamper(data)
    report = verify(tampered)
    assert not report.ok
    assert message in report.message
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(tampered)
    result = run_script(path)
    assert result.returncode == 1
    assert message in result.stdout


def test_a_tampered_csv_fails_and_names_the_place(tenant, mixed, tmp_path):
    data = export_bytes(tenant, "csv", agent="bob")
    rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
    column = rows[0].index("reason")
    record = next(r for r in rows if r[0] == "record")
    record[column] = "nothing to see"
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    report = verify(out.getvalue().encode(), "csv")
    assert not report.ok
    assert f"record seq {mixed[1].seq}: its content does not match its hash" in report.message


# --- the stand-alone script --------------------------------------------------------------------
@pytest.mark.parametrize("format", ["jsonl", "csv"])
def test_the_stand_alone_script_verifies_an_export(tenant, mixed, format, tmp_path):
    path = tmp_path / f"export.{format}"
    path.write_bytes(export_bytes(tenant, format, decision="deny"))
    result = run_script(path)
    assert result.returncode == 0, result.stdout + result.stderr
    last = mixed[-1].seq
    assert result.stdout.startswith(
        f"OK: 5 records and 4 digests chain to the checkpoint at seq {last}"
    )


def test_the_script_refuses_another_key(tenant, mixed, tmp_path):
    path = tmp_path / "export.jsonl"
    path.write_bytes(export_bytes(tenant))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--public-key=" + b64encode(b"\x01" * 32)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "is not signed by key" in result.stdout


def test_the_reader_names_a_broken_line():
    with pytest.raises(ExportBroken, match="line 2 is not JSON"):
        list(read_jsonl(['{"line": "header"}\n', "{oops\n"]))


# --- PostgreSQL --------------------------------------------------------------------------------
ON_POSTGRES = """
import os, uuid
from django.db import transaction
from django.utils import timezone
from audit.chain import chain_append
from audit.export import audit_export
from audit.models import AuditRecord
from audit.selectors import AuditFilters
from governance.services.agents import tenant_create

tenant = tenant_create(slug="acme")
now = timezone.now()
arguments = {"big": 2**70, "huge": 1e21, "float": 0.1, "text": "Ünïcode 𝄞"}
with transaction.atomic():
    chain_append([
        AuditRecord(
            tenant=tenant, call_id=uuid.uuid4(), kind="intent", agent_name=("alice", "bob")[n % 2],
            transport="ws", protocol_era="handshake", tool="git__log",
            arguments=arguments | {"n": n}, decision="allow", started_at=now, created_at=now,
        )
        for n in range(30)
    ])
for format in ("jsonl", "csv"):
    export = audit_export(tenant=tenant, filters=AuditFilters(agent="bob", q="üNÏ"), format=format)
    with open(f"{os.environ['EXPORT_DIR']}/export.{format}", "wb") as out:
        out.writelines(export.chunks)
"""


def test_an_export_from_postgresql_verifies(postgres_url, tmp_path):
    """jsonb gives numbers back in its own way and searches its own text: still the same."""
    env = {**os.environ, "DATABASE_URL": postgres_url, "EXPORT_DIR": str(tmp_path)}

    def manage(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    manage("migrate", "-v0")
    manage("shell", "-c", ON_POSTGRES)
    key = manage("audit_public_key").strip()
    for format in ("jsonl", "csv"):
        result = subprocess.run(
            [sys.executable, str(SCRIPT), str(tmp_path / f"export.{format}"),
             f"--public-key={key}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("OK: 15 records and 14 digests")


# --- a million records -------------------------------------------------------------------------
MILLION = 1_000_000


def peak_rss_reset() -> int:
    """Reset the process's peak resident size to its current one (Linux); return it, in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return peak_rss()


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


@pytest.mark.timeout(600)  # about 75 s on 2 idle cores; more when other work shares them
def test_a_million_records_stream_through_export_and_verifier_in_flat_memory(capsys):
    """1,000,000 records, half of them matching: the export streams record and gap lines
    straight into the verifier, and memory stays flat while several hundred MB go through.

    Memory is the peak resident size (Python objects and the database driver's alike):
    tracemalloc would see only the first, and slows this pipeline down fivefold."""
    tenant = Tenant.objects.create(slug="big")  # no admin records: the chain is ours alone
    started = time.monotonic()
    chain_bulk(tenant, MILLION)
    created = time.monotonic()
    size = 0

    def streamed(chunks: Iterator[bytes]) -> Iterator[bytes]:
        nonlocal size
        for chunk in chunks:
            size += len(chunk)
            yield from chunk.splitlines()

    before = peak_rss_reset()
    export = audit_export(tenant=tenant, filters=AuditFilters(agent="even"), format="jsonl")
    report = verify_export(read_jsonl(streamed(export.chunks)), public_key())
    growth = peak_rss() - before
    done = time.monotonic()

    assert report.ok, report.message
    assert (report.records, report.gaps) == (MILLION // 2, MILLION // 2 - 1)  # from seq 2
    assert size > 300 * 2**20
    assert growth < 100 * 2**20
    with capsys.disabled():
        print(
            f"\n1M records: created in {created - started:.1f} s; exported and verified "
            f"{size / 2**20:.0f} MB in {done - created:.1f} s; peak memory "
            f"{growth / 2**20:.1f} MB above the {before / 2**20:.0f} MB before"
        )
