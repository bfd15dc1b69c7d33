"""The calls this gateway process holds for a reviewer's decision.

The decision lives in the database (``governance.services.approvals``): a reviewer decides
from any process, and the holding process finds out by its poll (every
GOVERNANCE_POLL_SECONDS, one query while it holds anything), hastened by a channel-layer
nudge. While it holds calls it renews their lease, so a process that died leaves requests
the beat sweep can resolve; a process starting again under the same node name resolves its
former self's requests at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from governance.models import ApprovalRequest
from governance.selectors import approval_statuses
from governance.services.approvals import (
    approval_close,
    approval_release,
    approvals_interrupt,
    approvals_renew,
)

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status
# progress(done, total, message): an MCP progress notification to the waiting client.
Progress = Callable[[float, float | None, str], Awaitable[None]]
InDb = Callable[..., Awaitable[Any]]

RESTARTED = "the gateway restarted while this call waited for approval; nothing was called"
STOPPING = "the gateway stopped while this call waited for approval; nothing was called"


class Approvals:
    def __init__(self, in_db: InDb, *, node: str) -> None:
        self._in_db = in_db
        self.node = node
        self._waiting: dict[uuid.UUID, asyncio.Future[ApprovalRequest]] = {}
        self._renewed = 0.0

    async def start(self) -> None:
        """Resolve what this node's former process left pending (it restarted)."""
        closed = await self._in_db(approvals_interrupt, node=self.node, why=RESTARTED)
        if closed:
            logger.warning("resolved %d approval request(s) left by a restart", len(closed))

    async def wait(self, approval: ApprovalRequest, progress: Progress | None) -> ApprovalRequest:
        """Hold until the request is decided, expires, or this call is cancelled (which
        cancels the request). Returns the request as it ended."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ApprovalRequest] = loop.create_future()
        self._waiting[approval.pk] = future
        total = (approval.expires_at - approval.created_at).total_seconds()
        start = loop.time()
        try:
            while True:
                left = total - (loop.time() - start)
                if progress is not None:
                    await _tell(progress, loop.time() - start, total, approval, left)
                if left <= 0:
                    why = f"no reviewer decided within {total:g} s"
                    return await self._close(approval.pk, Status.EXPIRED, why)
                step = min(settings.APPROVAL_PROGRESS_SECONDS, left)
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), step)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                why = "the agent cancelled the call or disconnected"
                await asyncio.shield(self._close(approval.pk, Status.CANCELLED, why))
            raise
        finally:
            self._waiting.pop(approval.pk, None)

    async def _close(self, approval_id: uuid.UUID, status: str, why: str) -> ApprovalRequest:
        closed: ApprovalRequest = await self._in_db(
            approval_close, approval_id=approval_id, status=status, why=why
        )
        return closed

    async def release(self, approval: ApprovalRequest, digest: str) -> ApprovalRequest:
        """Use the approval for its call: once, and only for the arguments decided on."""
        released: ApprovalRequest = await self._in_db(
            approval_release, approval_id=approval.pk, digest=digest
        )
        return released

    async def poll(self) -> None:
        """Pick up decisions made anywhere; renew the lease of what this process holds."""
        if not self._waiting:
            return
        ids = list(self._waiting)
        closed: dict[uuid.UUID, ApprovalRequest] = await self._in_db(approval_statuses, ids=ids)
        for approval_id, approval in closed.items():
            future = self._waiting.get(approval_id)
            if future is not None and not future.done():
                future.set_result(approval)
        now = time.monotonic()
        if now - self._renewed >= settings.APPROVAL_LEASE_SECONDS / 3:
            self._renewed = now
            await self._in_db(
                approvals_renew, ids=ids, lease_seconds=settings.APPROVAL_LEASE_SECONDS
            )

    async def stop(self) -> None:
        """Shutting down: resolve every held request as interrupted, so each waiting call
        gets a clear error (the gateway's drain waits for those answers)."""
        for approval_id, future in list(self._waiting.items()):
            try:
                closed = await self._close(approval_id, Status.INTERRUPTED, STOPPING)
            except Exception:
                logger.exception("approval %s could not be resolved at shutdown", approval_id)
                continue
            if not future.done():
                future.set_result(closed)


async def _tell(
    progress: Progress, elapsed: float, total: float, approval: ApprovalRequest, left: float
) -> None:
    message = (
        f"waiting for a reviewer to approve (approval {approval.pk}); "
        f"denied in {max(left, 0):.0f} s unless decided"
    )
    try:
        await progress(round(elapsed, 3), total, message)
    except Exception:  # a client that cannot hear progress still gets its answer
        logger.debug("progress notification not sent", exc_info=True)
