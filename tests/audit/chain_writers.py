"""A gateway-like process that writes audit records through the real ``AuditWriter`` with
many concurrent callers: ``python -m tests.audit.chain_writers TENANT,... CALLERS RECORDS``.
The database comes from the environment (DATA_DIR's SQLite, or DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
django.setup()

from django.utils import timezone  # noqa: E402

from audit.models import AuditRecord  # noqa: E402
from audit.writer import AuditWriter  # noqa: E402
from governance.models import Tenant  # noqa: E402


async def main(slugs: list[str], callers: int, records: int) -> None:
    tenants = [t async for t in Tenant.objects.filter(slug__in=slugs)]
    writer = AuditWriter(batch_max=500)

    async def caller(n: int) -> None:
        for i in range(records):
            now = timezone.now()
            tenant = tenants[(n + i) % len(tenants)]
            await writer.write(
                AuditRecord(
                    call_id=uuid.uuid4(),
                    kind="intent",
                    tenant_id=tenant.id,
                    agent_name=f"pid{os.getpid()}-caller{n}",
                    transport="ws",
                    protocol_era="handshake",
                    tool="time__get_current_time",
                    arguments={"i": i, "load": i / 7},
                    decision="allow",
                    started_at=now,
                    created_at=now,
                )
            )

    await asyncio.gather(*(caller(n) for n in range(callers)))
    print(f"wrote {callers * records} records in {writer.batches_committed} batches")


if __name__ == "__main__":
    slugs, callers, records = sys.argv[1].split(","), int(sys.argv[2]), int(sys.argv[3])
    asyncio.run(main(slugs, callers, records))
