import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from audit.models import AuditRecord
from audit.writer import AuditWriter
from governance.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


def record(tenant_id: int, n: int) -> AuditRecord:
    now = timezone.now()
    return AuditRecord(
        call_id=uuid.uuid4(),
        kind="intent",
        tenant_id=tenant_id,
        transport="ws",
        protocol_era="handshake",
        tool=f"t__{n}",
        decision="allow",
        started_at=now,
        created_at=now,
    )


async def test_concurrent_writers_share_batches_and_all_are_durable_on_return():
    tenant = await Tenant.objects.acreate(slug="acme")
    writer = AuditWriter(batch_max=500)
    count = await sync_to_async(AuditRecord.objects.count)()

    async def write(n: int) -> int:
        await writer.write(record(tenant.id, n))
        # Durable on return: visible to another connection at once.
        return await sync_to_async(AuditRecord.objects.filter(tool=f"t__{n}").count)()

    seen = await asyncio.gather(*(write(n) for n in range(200)))
    assert seen == [1] * 200
    assert await sync_to_async(AuditRecord.objects.count)() == count + 200
    assert writer.batches_committed < 200 / 4  # group commit, not a transaction per record


async def test_a_failed_batch_raises_in_every_waiting_caller():
    writer = AuditWriter(batch_max=10)
    bad = record(tenant_id=999_999, n=1)  # no such tenant: the foreign key fails
    results = await asyncio.gather(writer.write(bad), return_exceptions=True)
    assert isinstance(results[0], Exception)
    tenant = await Tenant.objects.acreate(slug="after")
    await writer.write(record(tenant.id, 2))  # the writer keeps working


async def test_a_record_the_database_refuses_fails_only_its_own_caller():
    """A batch that fails is retried record by record: the others' calls go on."""
    tenant = await Tenant.objects.acreate(slug="mixed")
    writer = AuditWriter(batch_max=50)
    good = [record(tenant.id, n) for n in range(20)]
    bad = record(tenant_id=999_999, n=99)
    results = await asyncio.gather(
        *(writer.write(r) for r in [*good[:10], bad, *good[10:]]), return_exceptions=True
    )
    assert [isinstance(r, Exception) for r in results] == [False] * 10 + [True] + [False] * 10
    stored = await sync_to_async(list)(
        AuditRecord.objects.filter(tenant=tenant).order_by("seq").values_list("seq", "tool")
    )
    assert [seq for seq, _ in stored] == list(range(1, 21))  # the chain has no hole either
