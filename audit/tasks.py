"""Celery beat tasks of the audit trail: interfaces over audit/services.py. Both are
idempotent: a periodic checkpoint is skipped when the head has not moved, and pruning only
removes what is already past its tenant's retention period."""

from __future__ import annotations

from celery import shared_task

from audit.services import audit_prune_all, checkpoints_create_all


@shared_task(name="audit.checkpoint", ignore_result=True)
def checkpoint() -> int:
    return checkpoints_create_all()


@shared_task(name="audit.prune", ignore_result=True)
def prune() -> int:
    return sum(result.pruned for result in audit_prune_all())
