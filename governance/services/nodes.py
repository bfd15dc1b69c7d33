"""Gateway processes by their heartbeat, and the recovery of the calls a dead one left.

Each gateway process registers at start (``node_start``), beats every NODE_HEARTBEAT_SECONDS
with the start of its oldest unfinished call (``node_beat``), and leaves when it stops
cleanly (``node_leave``). ``nodes_recover`` (at each gateway start and from Celery beat)
declares dead a node silent for NODE_LEASE_SECONDS, then records as interrupted each call of
the dead whose intent has no outcome. It goes only as far back as no live node may still
hold a call (a node's ``calls_since``), so node clocks must agree (NTP) within well under
the lease.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from audit.services import calls_interrupt
from governance.models import GatewayNode

INTERRUPTED = (
    "the gateway process handling this call stopped before it finished; "
    "whether the upstream ran it is unknown"
)


def node_start(*, id: uuid.UUID, name: str, now: datetime | None = None) -> None:
    """Register this process. A former process of the same name is dead: this one has its
    name (by default its host and port), so it is gone."""
    now = now or timezone.now()
    with transaction.atomic():
        GatewayNode.objects.filter(name=name, dead_at=None).update(dead_at=now)
        GatewayNode.objects.create(id=id, name=name, started_at=now, seen_at=now, calls_since=now)


def node_beat(
    *, id: uuid.UUID, name: str, calls_since: datetime, now: datetime | None = None
) -> None:
    """This process is alive, and each call it has not finished began at or after
    ``calls_since``. A process found dead while it merely stalled comes back to life."""
    now = now or timezone.now()
    fields = {"name": name, "seen_at": now, "calls_since": calls_since, "dead_at": None}
    GatewayNode.objects.update_or_create(
        id=id, defaults=fields, create_defaults={**fields, "started_at": now}
    )


def node_leave(*, id: uuid.UUID) -> None:
    """This process stopped cleanly: every call it took has its outcome."""
    GatewayNode.objects.filter(id=id).delete()


def nodes_recover(*, lease_seconds: float, now: datetime | None = None) -> int:
    """Declare dead the nodes silent for ``lease_seconds``, and record as interrupted the
    calls the dead left unanswered, back to where a live node may still hold one. Returns
    how many calls were recorded."""
    now = now or timezone.now()
    with transaction.atomic():
        nodes = list(GatewayNode.objects.select_for_update().order_by("started_at"))
        silent = now - timedelta(seconds=lease_seconds)
        for node in nodes:
            if node.dead_at is None and node.seen_at < silent:
                node.dead_at = now
                node.save(update_fields=["dead_at"])
        live = [node.calls_since for node in nodes if node.dead_at is None]
        horizon = min(live, default=now)
        interrupted = 0
        for node in nodes:
            if node.dead_at is None:
                continue
            until = min(horizon, node.dead_at)
            if node.calls_since < until:
                interrupted += calls_interrupt(
                    since=node.calls_since, before=until, why=INTERRUPTED
                )
            if until >= node.dead_at:
                node.delete()  # everything it could have left is accounted for
            elif until > node.calls_since:
                node.calls_since = until
                node.save(update_fields=["calls_since"])
        return interrupted
