from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.db.models import F

from governance.models import Tenant

logger = logging.getLogger(__name__)

# Every gateway process listens on this channel-layer group for governance changes.
GOVERNANCE_GROUP = "governance"


def tenant_version_bump(*, tenant_id: int) -> None:
    """Mark the tenant's governance state changed. Call inside the transaction that made the
    change. Every gateway process reloads it on its next poll (GOVERNANCE_POLL_SECONDS); after
    commit, a nudge on the channel layer makes them reload at once."""
    Tenant.objects.filter(id=tenant_id).update(version=F("version") + 1)
    transaction.on_commit(lambda: governance_nudge(tenant_id=tenant_id))


def governance_nudge(*, tenant_id: int) -> None:
    """Tell every gateway process to re-read the persisted versions now. Only a nudge: the
    channel layer may drop it (and the in-memory layer reaches this process alone), so a
    failure here is logged and otherwise ignored; the poll still applies the change."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(
            GOVERNANCE_GROUP, {"type": "governance.changed", "tenant": tenant_id}
        )
    except Exception:
        logger.debug("governance nudge not sent; the poll will apply the change", exc_info=True)
