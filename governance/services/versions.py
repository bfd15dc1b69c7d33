from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from governance.models import Tenant

logger = logging.getLogger(__name__)

# Every gateway process listens on this channel-layer group for governance changes.
GOVERNANCE_GROUP = "governance"
NUDGE_SECONDS = 1.0


def tenant_version_bump(*, tenant_id: int) -> None:
    """Mark the tenant's governance state changed. Call inside the transaction that made the
    change. Every gateway process reloads it on its next poll (GOVERNANCE_POLL_SECONDS); after
    commit, a nudge on the channel layer makes them reload at once."""
    Tenant.objects.filter(id=tenant_id).update(version=F("version") + 1)
    transaction.on_commit(lambda: governance_nudge(tenant_id=tenant_id))


def governance_nudge(*, tenant_id: int) -> None:
    """Tell every gateway process to re-read the persisted versions now."""
    layer_nudge({"type": "governance.changed", "tenant": tenant_id})


def layer_nudge(message: dict[str, object]) -> None:
    """Send ``message`` to every gateway process's nudge listener. Only a nudge: the channel
    layer may drop it (and the in-memory layer reaches this process alone), so a failure is
    logged and otherwise ignored, and a Redis that hangs costs the change NUDGE_SECONDS at
    most (the layer's sockets have no timeout); the polls apply the change anyway."""
    layer = get_channel_layer()
    if layer is None:
        return

    async def send() -> None:
        async with asyncio.timeout(NUDGE_SECONDS):
            await layer.group_send(GOVERNANCE_GROUP, message)

    try:
        async_to_sync(send)()
    except Exception:
        logger.debug("nudge %s not sent; the polls will see the change", message, exc_info=True)
