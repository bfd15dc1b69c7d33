"""Group commit for audit records.

Callers ``await writer.write(record)``; records that arrive while a transaction is in flight
are chained and committed together in the next one, and each caller resumes when its own
batch is durable. A single writer thread keeps the ORM off the event loop and SQLite free of write
contention between our own threads (DESIGN.md §5: one write per call caps a process at
~200 calls/s; one write per batch does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections, transaction

from audit.chain import chain_append
from audit.models import AuditRecord

logger = logging.getLogger(__name__)


class AuditWriter:
    def __init__(self, *, batch_max: int) -> None:
        self._batch_max = batch_max
        self._pending: list[tuple[AuditRecord, asyncio.Future[None]]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._unfinished: set[asyncio.Future[None]] = set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-writer")
        self.batches_committed = 0

    async def write(self, record: AuditRecord) -> None:
        """Return once ``record`` is committed; raise if the commit failed."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._run(), name="audit-writer")
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((record, done))
        self._unfinished.add(done)
        done.add_done_callback(self._unfinished.discard)
        assert self._wakeup is not None
        self._wakeup.set()
        # shield: a caller that is cancelled stops waiting, but its record is still written.
        await asyncio.shield(done)

    async def flush(self) -> None:
        """Wait until everything written so far is durable."""
        if self._unfinished:
            await asyncio.gather(*self._unfinished, return_exceptions=True)

    async def close(self) -> None:
        """Flush, then stop the writer's task."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self._batch_max]
                del self._pending[: self._batch_max]
                if not await self._commit(batch) and len(batch) > 1:
                    # One record the database refuses must not fail the other callers' calls:
                    # commit them one by one, so only that record's caller gets the error.
                    logger.warning("retrying a failed audit batch record by record")
                    for one in batch:
                        await self._commit([one])

    async def _commit(self, batch: list[tuple[AuditRecord, asyncio.Future[None]]]) -> bool:
        """Commit ``batch`` and settle its callers; False (callers unsettled) if a batch of
        several failed."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, _commit, [r for r, _ in batch])
        except Exception as exc:
            logger.exception("audit batch of %d records failed", len(batch))
            if len(batch) > 1:
                return False
            _settle(batch, exc)
            return True
        self.batches_committed += 1
        _settle(batch, None)
        return True


def _settle(batch: list[tuple[AuditRecord, asyncio.Future[None]]], exc: Exception | None) -> None:
    for _, done in batch:
        if not done.done():
            if exc is None:
                done.set_result(None)
            else:
                done.set_exception(exc)


def _commit(records: list[AuditRecord]) -> None:
    try:
        with transaction.atomic():
            chain_append(records)
    except Exception:
        close_old_connections()
        raise
