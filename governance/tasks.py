"""Celery tasks of the governance app: interfaces over services/slowchecks.py.

``run_slow_check`` takes only the row id; the row holds everything else. acks_late with
reject_on_worker_lost puts the message back when the pool child running it dies (DESIGN.md
§5); the service is idempotent and counts attempts, so a redelivery is safe and bounded. The
time limits stay below the sweep's default 30 s, so a check still running is not re-sent.
"""

from __future__ import annotations

import threading

from celery import shared_task
from celery.signals import worker_process_init, worker_shutting_down
from django.conf import settings

from governance.services.approvals import approvals_interrupt
from governance.services.nodes import nodes_recover
from governance.services.slowchecks import (
    slow_check_run,
    slow_checks_preload,
    slow_checks_sweep,
)


@shared_task(
    name="governance.run_slow_check",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=20,
    time_limit=25,
)
def run_slow_check(check_id: int) -> str | None:
    verdict = slow_check_run(check_id=check_id)
    return verdict.verdict if verdict is not None else None


@shared_task(name="governance.sweep_slow_checks", ignore_result=True)
def sweep_slow_checks(older_than_seconds: float = 30) -> int:
    return slow_checks_sweep(older_than_seconds=older_than_seconds)


@shared_task(name="governance.sweep_approvals", ignore_result=True)
def sweep_approvals() -> int:
    """Resolve requests whose gateway died and never came back (their lease lapsed)."""
    return len(approvals_interrupt())


@shared_task(name="governance.sweep_nodes", ignore_result=True)
def sweep_nodes() -> int:
    """Record as interrupted the calls a dead gateway process left unanswered."""
    return nodes_recover(lease_seconds=settings.NODE_LEASE_SECONDS)


_shutting_down = threading.Event()


@worker_shutting_down.connect
def _no_more_preloading(**_: object) -> None:
    # Set in the worker's parent; a pool child forked during shutdown inherits it.
    _shutting_down.set()


@worker_process_init.connect
def _preload_in_pool_child(**_: object) -> None:
    """Each pool child loads the models in the background as it starts (a child must report
    ready within seconds, a model takes longer); the first check waits only for the rest."""
    if not _shutting_down.is_set():
        threading.Thread(target=slow_checks_preload, name="slow-check-preload", daemon=True).start()
