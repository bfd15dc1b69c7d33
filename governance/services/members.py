"""Who may use a tenant's dashboard and API, and in which role. Each change is recorded in
the tenant's audit chain as ``actor``'s act; it alters nothing agents may do, so the tenant's
governance version stays."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from governance.models import Membership, Tenant
from governance.services.changes import SYSTEM, change_record, object_snapshot


@transaction.atomic
def membership_set(
    *, tenant: Tenant, user: AbstractBaseUser, role: str, actor: str = SYSTEM
) -> Membership:
    """Give ``user`` ``role`` in ``tenant`` (reviewer or admin), or change the role they have."""
    membership = Membership.objects.select_for_update().filter(tenant=tenant, user=user).first()
    if membership is None:
        membership = Membership.objects.create(tenant=tenant, user=user, role=role)
        change_record(actor=actor, action="created", obj=membership, before=None)
    elif membership.role != role:
        before = object_snapshot(membership)
        membership.role = role
        membership.save(update_fields=["role"])
        change_record(actor=actor, action="changed", obj=membership, before=before)
    return membership
