from __future__ import annotations

from django.db.models import F

from governance.models import Tenant


def tenant_version_bump(*, tenant_id: int) -> None:
    """Mark the tenant's governance state changed; every gateway process reloads it on its next
    poll (GOVERNANCE_POLL_SECONDS). Call inside the transaction that made the change."""
    Tenant.objects.filter(id=tenant_id).update(version=F("version") + 1)
