"""The hash chain: appending, append-only records, and verification against tampering done
straight in the database, the way someone with SQL access would do it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from audit.chain import chain_append, record_document
from audit.chainproof import GENESIS, document_digest, link
from audit.models import AppendOnlyError, AuditRecord, ChainHead, Checkpoint
from audit.services import audit_prune, checkpoint_create, checkpoints_create_all
from audit.verify import chain_verify
from governance.models import Tenant
from tests.audit.conftest import append as append_records
from tests.audit.conftest import audit_record

pytestmark = pytest.mark.django_db


def record(tenant: Tenant, n: int, **fields) -> AuditRecord:
    """The package's ``audit_record``, told apart by ``n``, with floats in its JSON."""
    numbered = {
        "request_id": str(n),
        "tool": f"time__tool_{n}",
        "arguments": {"n": n, "ratio": n / 3, "tz": "Europe/Paris"},
        "rule_id": 3,
        "policy_version": 2,
        "guardrails": [{"check": "pii", "verdict": "pass", "score": 0.25}],
        "latency_us": 1000 + n,
    }
    return audit_record(tenant, **(numbered | fields))


def append(tenant: Tenant, count: int, start: int = 1) -> list[AuditRecord]:
    return append_records(*(record(tenant, n) for n in range(start, start + count)))


@pytest.fixture
def tenant() -> Tenant:
    """Without ``tenant_create``'s admin records: the chain holds these tests' records alone."""
    return Tenant.objects.create(slug="acme")


def sql(statement: str, *params) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def broken_at(tenant: Tenant):
    report = chain_verify(tenant=tenant)
    assert not report.ok, "the tampering went unnoticed"
    return report.broken


# --- appending ---------------------------------------------------------------------------------
def test_each_tenant_has_its_own_gap_free_chain(tenant):
    other = Tenant.objects.create(slug="other")
    mixed = [record(tenant if n % 3 else other, n) for n in range(1, 31)]
    with transaction.atomic():
        chain_append(mixed)
    for who in (tenant, other):
        rows = list(AuditRecord.objects.filter(tenant=who).order_by("seq"))
        assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
        prev = GENESIS
        for row in rows:
            assert row.prev_hash == prev
            assert row.hash == link(prev, document_digest(record_document(vars(row))))
            prev = row.hash
        head = ChainHead.objects.get(tenant=who)
        assert (head.seq, head.hash) == (rows[-1].seq, rows[-1].hash)
        assert chain_verify(tenant=who).ok


def test_the_hash_read_back_equals_the_hash_written(tenant):
    """Floats, nested JSON, odd Unicode: what the database gives back hashes the same."""
    arguments = {
        "float": 0.1,
        "tiny": 1.5e-7,
        "whole": 2.0,
        "big": 1e21,
        "huge_int": 2**70,
        "astral 😀": ["\U0001f600", "\ufb01"],
        "nested": {"b": [1, {"z": None, "a": True}]},
    }
    written = record(tenant, 1, arguments=arguments, shadow={"k": "é"}, diff={"x": [1, 2.5]})
    with transaction.atomic():
        chain_append([written])
    stored = AuditRecord.objects.get(pk=written.pk)
    assert stored.hash == written.hash
    assert stored.hash == link(GENESIS, document_digest(record_document(vars(stored))))
    assert chain_verify(tenant=tenant).ok


@pytest.mark.django_db(transaction=True)
def test_appending_outside_a_transaction_is_refused(tenant):
    with pytest.raises(RuntimeError, match=r"transaction\.atomic"):
        chain_append([record(tenant, 1)])


def test_records_cannot_be_changed_or_deleted_through_the_application(tenant):
    [first] = append(tenant, 1)
    stored = AuditRecord.objects.get(pk=first.pk)
    stored.outcome = "ok"
    with pytest.raises(AppendOnlyError):
        stored.save()
    with pytest.raises(AppendOnlyError):
        stored.delete()
    with pytest.raises(AppendOnlyError):
        AuditRecord.objects.filter(pk=first.pk).update(outcome="ok")
    with pytest.raises(AppendOnlyError):
        AuditRecord.objects.filter(pk=first.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditRecord.objects.bulk_update([stored], ["outcome"])
    assert AuditRecord.objects.get(pk=first.pk).outcome == ""


# --- tampering, each kind reported at the right record ------------------------------------------
def test_an_intact_chain_verifies(tenant):
    append(tenant, 20)
    checkpoint_create(tenant=tenant)
    append(tenant, 5, start=21)
    report = chain_verify(tenant=tenant)
    assert report.ok, report.broken
    assert (report.records, report.first_seq, report.last_seq, report.checkpoints) == (25, 1, 25, 1)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("outcome", "ok"),
        ("decision", "deny"),
        ("tool", "time__other"),
        ("agent_name", "someone-else"),
        ("latency_us", 1),
        ("arguments", '{"n": 7, "ratio": 2.3333333333333335, "tz": "UTC"}'),
        ("created_at", "2020-01-01 00:00:00"),
    ],
)
def test_an_edited_field_is_reported_at_its_record(tenant, column, value):
    records = append(tenant, 10)
    sql(f"UPDATE audit_auditrecord SET {column} = %s WHERE id = %s", value, records[6].pk)  # noqa: S608
    broken = broken_at(tenant)
    assert (broken.seq, broken.record_id) == (7, records[6].pk)
    assert "content does not match its hash" in broken.problem


def test_an_edit_with_its_hash_recomputed_is_reported_at_the_next_link(tenant):
    records = append(tenant, 10)
    forged = AuditRecord.objects.get(pk=records[3].pk)
    forged.outcome = "ok"
    new_hash = link(forged.prev_hash, document_digest(record_document(vars(forged))))
    sql("UPDATE audit_auditrecord SET outcome = 'ok', hash = %s WHERE id = %s", new_hash, forged.pk)
    broken = broken_at(tenant)
    assert (broken.seq, broken.record_id) == (5, records[4].pk)
    assert "prev_hash does not match the hash of seq 4" in broken.problem


def test_a_deleted_record_is_reported_missing(tenant):
    records = append(tenant, 10)
    sql("DELETE FROM audit_auditrecord WHERE id = %s", records[4].pk)
    broken = broken_at(tenant)
    assert broken.seq == 5
    assert broken.problem == "missing: seq 4 is followed by seq 6"


def test_deleting_the_first_records_is_reported(tenant):
    records = append(tenant, 10)
    sql("DELETE FROM audit_auditrecord WHERE id IN (%s, %s)", records[0].pk, records[1].pk)
    broken = broken_at(tenant)
    assert broken.seq == 1
    assert "the chain starts at seq 3 and no retention checkpoint covers seq 1..2" in broken.problem


def test_reordered_records_are_reported_at_the_first_moved_one(tenant):
    records = append(tenant, 10)
    a, b = records[2].pk, records[3].pk  # seq 3 and 4 swap places
    sql("UPDATE audit_auditrecord SET seq = 1000 WHERE id = %s", a)
    sql("UPDATE audit_auditrecord SET seq = 3 WHERE id = %s", b)
    sql("UPDATE audit_auditrecord SET seq = 4 WHERE id = %s", a)
    broken = broken_at(tenant)
    assert (broken.seq, broken.record_id) == (3, b)
    assert "prev_hash does not match the hash of seq 2" in broken.problem


def test_a_forged_record_inserted_in_the_middle_is_reported(tenant):
    records = append(tenant, 10)
    # Make room at seq 6 (shift the later ones up, last first for the unique constraint),
    # then insert a record whose links and hash are all computed correctly.
    for r in reversed(records[5:]):
        sql("UPDATE audit_auditrecord SET seq = seq + 1 WHERE id = %s", r.pk)
    forged = record(tenant, 99, seq=6, prev_hash=records[4].hash, outcome="ok")
    forged.hash = link(forged.prev_hash, document_digest(record_document(vars(forged))))
    _insert_raw(forged)
    broken = broken_at(tenant)
    assert (broken.seq, broken.record_id) == (7, records[5].pk)
    assert "prev_hash does not match the hash of seq 6" in broken.problem


def test_a_forged_record_appended_after_the_head_is_reported(tenant):
    records = append(tenant, 10)
    forged = record(tenant, 99, seq=11, prev_hash=records[-1].hash, outcome="ok")
    forged.hash = link(forged.prev_hash, document_digest(record_document(vars(forged))))
    pk = _insert_raw(forged)
    broken = broken_at(tenant)
    assert (broken.seq, broken.record_id) == (11, pk)
    assert "comes after the signed head (seq 10): not written by a gateway" in broken.problem


def test_a_truncated_tail_is_reported_by_the_signed_head(tenant):
    append(tenant, 10)
    sql("DELETE FROM audit_auditrecord WHERE tenant_id = %s AND seq > 7", tenant.id)
    broken = broken_at(tenant)
    assert broken.seq == 8
    assert "signed head is at seq 10 but the chain ends at seq 7" in broken.problem
    assert "records 8..10 were removed" in broken.problem


def test_a_truncated_tail_with_the_head_rolled_back_is_reported_by_a_checkpoint(tenant):
    records = append(tenant, 10)
    checkpoint = checkpoint_create(tenant=tenant)
    # The intruder also winds the head back; it can't sign it, so only a copy of an older
    # signed head would pass: the checkpoint still tells.
    cut_tail_and_head(tenant, records, keep=6)
    broken = broken_at(tenant)
    assert broken.seq == 7
    assert f"checkpoint {checkpoint.id} signed seq 10" in broken.problem
    assert "records 7..10 were removed" in broken.problem


def test_a_rolled_back_head_without_a_checkpoint_has_a_bad_signature(tenant):
    records = append(tenant, 10)
    cut_tail_and_head(tenant, records, keep=6)
    broken = broken_at(tenant)
    assert "the chain head: its signature is not valid" in broken.problem


def cut_tail_and_head(tenant: Tenant, records: list[AuditRecord], keep: int) -> None:
    """Delete the records after ``keep`` and wind the head back to match (unsigned)."""
    sql("DELETE FROM audit_auditrecord WHERE tenant_id = %s AND seq > %s", tenant.id, keep)
    sql(
        "UPDATE audit_chainhead SET seq = %s, hash = %s WHERE tenant_id = %s",
        keep,
        records[keep - 1].hash,
        tenant.id,
    )


def test_a_rewritten_chain_is_reported_at_the_checkpoint_it_contradicts(tenant):
    """All hashes recomputed after an edit: every link holds, but not the signed checkpoint."""
    append(tenant, 10)
    checkpoint = checkpoint_create(tenant=tenant)
    rows = list(AuditRecord.objects.filter(tenant=tenant).order_by("seq"))
    rows[2].outcome = "ok"
    prev = rows[1].hash
    for row in rows[2:]:
        row.prev_hash = prev
        row.hash = prev = link(prev, document_digest(record_document(vars(row))))
        sql(
            "UPDATE audit_auditrecord SET outcome = %s, prev_hash = %s, hash = %s WHERE id = %s",
            row.outcome,
            row.prev_hash,
            row.hash,
            row.pk,
        )
    broken = broken_at(tenant)
    assert broken.seq == 10
    assert f"differs from checkpoint {checkpoint.id}" in broken.problem


def test_an_altered_checkpoint_is_reported(tenant):
    append(tenant, 5)
    checkpoint = checkpoint_create(tenant=tenant)
    sql("UPDATE audit_checkpoint SET seq = 4 WHERE id = %s", checkpoint.id)
    broken = broken_at(tenant)
    assert (
        broken.problem
        == f"checkpoint {checkpoint.id} (manual): its signature is not valid: it was altered"
    )


def _insert_raw(forged: AuditRecord) -> int:
    """Insert with plain SQL, as an intruder would (the ORM's own path is the chain's)."""
    fields = [f for f in AuditRecord._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(f.column for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    values = [f.get_db_prep_save(getattr(forged, f.attname), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO audit_auditrecord ({columns}) VALUES ({marks})", values)  # noqa: S608
        return AuditRecord.objects.get(tenant_id=forged.tenant_id, seq=forged.seq).pk


# --- checkpoints and retention -----------------------------------------------------------------
def test_periodic_checkpoints_sign_only_chains_that_moved(tenant):
    quiet = Tenant.objects.create(slug="quiet")
    append(tenant, 3)
    assert checkpoints_create_all() == 1
    assert checkpoints_create_all() == 0
    append(tenant, 2, start=4)
    assert checkpoints_create_all() == 1
    assert list(Checkpoint.objects.filter(tenant=tenant).values_list("seq", flat=True)) == [3, 5]
    assert not Checkpoint.objects.filter(tenant=quiet).exists()


def test_retention_prunes_old_records_and_the_rest_still_verifies(tenant):
    tenant.audit_retention_days = 30
    tenant.save()
    now = timezone.now()
    old = [record(tenant, n, created_at=now - timedelta(days=40)) for n in range(1, 8)]
    young = [record(tenant, n, created_at=now - timedelta(days=1)) for n in range(8, 12)]
    with transaction.atomic():
        chain_append(old + young)
    checkpoint_create(tenant=tenant)  # a checkpoint of pruned records goes with them

    result = audit_prune(tenant=tenant, now=now)

    assert (result.pruned, result.through_seq) == (7, 7)
    remaining = list(AuditRecord.objects.filter(tenant=tenant).order_by("seq"))
    assert [r.seq for r in remaining] == [8, 9, 10, 11, 12]
    pruning = remaining[-1]
    assert (pruning.kind, pruning.actor, pruning.reason) == ("admin", "retention", "pruned")
    assert pruning.diff["pruned"] == 7
    anchor = Checkpoint.objects.get(tenant=tenant, reason="retention")
    assert (anchor.seq, anchor.hash) == (7, old[-1].hash)
    report = chain_verify(tenant=tenant)
    assert report.ok, report.broken
    assert (report.first_seq, report.last_seq) == (8, 12)
    assert audit_prune(tenant=tenant, now=now).pruned == 0  # nothing more is old


def test_pruning_stops_at_the_first_young_record(tenant):
    """Records are chained in commit order, created_at a little before: an old record after a
    young one stays, so nothing young is ever pruned."""
    tenant.audit_retention_days = 1
    now = timezone.now()
    ages = [5, 5, 0, 5, 0]
    records = [record(tenant, n, created_at=now - timedelta(days=a)) for n, a in enumerate(ages)]
    with transaction.atomic():
        chain_append(records)
    assert audit_prune(tenant=tenant, now=now).pruned == 2


def test_removing_the_retention_checkpoint_is_reported(tenant):
    tenant.audit_retention_days = 1
    now = timezone.now()
    with transaction.atomic():
        chain_append([record(tenant, n, created_at=now - timedelta(days=3)) for n in range(5)])
        chain_append([record(tenant, 9)])
    audit_prune(tenant=tenant, now=now)
    sql("DELETE FROM audit_checkpoint WHERE reason = 'retention'")
    broken = broken_at(tenant)
    assert broken.seq == 1
    assert "the chain starts at seq 6 and no retention checkpoint covers seq 1..5" in broken.problem


def test_a_tenant_without_retention_keeps_everything(tenant):
    append(tenant, 3)
    assert audit_prune(tenant=tenant).pruned == 0
    assert AuditRecord.objects.filter(tenant=tenant).count() == 3


# --- the command -------------------------------------------------------------------------------
def test_audit_verify_reports_each_tenant_and_exits_1_on_a_break(tenant, capsys):
    other = Tenant.objects.create(slug="other")
    append(tenant, 4)
    records = append(other, 4)
    call_command("audit_verify")
    out = capsys.readouterr().out
    assert "acme: OK, 4 records (seq 1..4)" in out
    assert "other: OK, 4 records (seq 1..4)" in out

    sql("UPDATE audit_auditrecord SET reason = 'nothing to see' WHERE id = %s", records[1].pk)
    with pytest.raises(SystemExit) as exit_:
        call_command("audit_verify")
    assert exit_.value.code == 1
    out = capsys.readouterr().out
    assert "acme: OK" in out
    assert (
        f"other: BROKEN at seq 2 (record id {records[1].pk}): its content does not match its "
        "hash: edited" in out
    )
    call_command("audit_verify", "--tenant", "acme")  # one tenant: its own chain is fine


@pytest.mark.django_db(transaction=True)
def test_parallel_verification_finds_what_one_process_finds(tenant, monkeypatch):
    import audit.verify

    monkeypatch.setattr(audit.verify, "CHUNK", 10)  # several parts from few records
    records = [record(tenant, n) for n in range(1, 201)]
    with transaction.atomic():
        chain_append(records)
    assert chain_verify(tenant=tenant, jobs=3).ok
    # A break inside a later part, and one exactly where two parts meet.
    sql("UPDATE audit_auditrecord SET tool = 'x' WHERE id = %s", records[150].pk)
    assert chain_verify(tenant=tenant, jobs=3).broken == chain_verify(tenant=tenant).broken
    assert chain_verify(tenant=tenant, jobs=3).broken.seq == 151
    sql("UPDATE audit_auditrecord SET tool = %s WHERE id = %s", records[150].tool, records[150].pk)
    sql("DELETE FROM audit_auditrecord WHERE id = %s", records[133].pk)  # seq 134: a part's start
    assert chain_verify(tenant=tenant, jobs=3).broken == chain_verify(tenant=tenant).broken
    assert chain_verify(tenant=tenant, jobs=3).broken.seq == 134


def test_the_beat_tasks_checkpoint_and_prune(tenant):
    from audit import tasks

    tenant.audit_retention_days = 1
    tenant.save()
    old = timezone.now() - timedelta(days=2)
    with transaction.atomic():
        chain_append([record(tenant, n, created_at=old) for n in range(3)])
        chain_append([record(tenant, 9)])
    assert tasks.checkpoint.apply().get() == 1
    assert tasks.prune.apply().get() == 3
    assert chain_verify(tenant=tenant).ok


@pytest.mark.parametrize(
    ("stored", "chained"),
    [
        ("2026-11-24 03:36:22.486123", "2026-11-24T03:36:22.486123Z"),  # SQLite
        ("2026-11-24 03:36:22", "2026-11-24T03:36:22.000000Z"),
        ("2026-11-24 03:36:22.486123+00", "2026-11-24T03:36:22.486123Z"),  # PostgreSQL
        ("2026-11-24 03:36:22.481+00", "2026-11-24T03:36:22.481000Z"),  # 26 characters too
        ("2026-11-24 03:36:22+00", "2026-11-24T03:36:22.000000Z"),
    ],
)
def test_stored_times_are_read_back_as_the_chain_wrote_them(stored, chained):
    from audit.rows import stored_timestamp

    assert stored_timestamp(stored) == chained
