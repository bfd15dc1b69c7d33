"""Slow (Celery) guardrail checks: submit a call's checks, read their verdicts, run one in a
worker, and sweep up the ones a dead worker left behind.

The ``SlowCheck`` row is the truth, not the message. ``slow_checks_submit`` stores one row
per check and enqueues its id after commit; ``slow_check_run`` (the task) counts an attempt
when it starts, runs the check outside any transaction, and stores the verdict only if the row
is still pending, in the same transaction as the call's ``verdict`` audit record and any
alert: a redelivered or duplicated task finds the row done and writes nothing. A worker
killed mid-check loses no row: Celery redelivers the message (acks_late with
reject_on_worker_lost) when a pool child dies, and ``slow_checks_sweep`` re-sends the rows a
worker killed as a whole left pending. After SLOW_CHECK_MAX_ATTEMPTS starts the row gives up
with the verdict ``error``, so a check that kills its worker every time cannot loop forever.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from audit.chain import chain_append
from audit.models import AuditRecord
from governance.engine.guardrails.base import ConfigError
from governance.engine.guardrails.pipeline import GuardrailSpec
from governance.models import Alert, Guardrail, SlowCheck
from governance.slowchecks import (
    SlowCheckImpl,
    payload_text,
    slow_check_get,
    slow_check_names,
    slow_checks_import,
)
from orchestrator.env import env_bool, env_list

logger = logging.getLogger(__name__)

SWEEP_BATCH = 500  # rows looked at per sweep; the next sweep takes the rest
# Kept in SlowCheck.detail from the submit on: what the worker needs of the guardrail row.
_SPEC_KEYS = ("config", "failure_mode", "guardrail")


@dataclass(frozen=True, slots=True)
class SlowVerdict:
    id: int
    name: str
    stage: str
    verdict: str  # pass | flag | error
    score: float | None
    detail: dict[str, Any]
    error: str  # why the verdict is "error"; "" otherwise


def max_attempts() -> int:
    return int(getattr(settings, "SLOW_CHECK_MAX_ATTEMPTS", 3))


def slow_checks_extra_import() -> None:
    """Import the modules that register a deployment's own checks (SLOW_CHECKS_EXTRA)."""
    extra = getattr(settings, "SLOW_CHECKS_EXTRA", None)
    slow_checks_import(env_list("SLOW_CHECKS_EXTRA", []) if extra is None else extra)


def slow_checks_preload() -> None:
    """Load every registered check's model now (SLOW_CHECK_PRELOAD), so the first call a
    worker process takes does not wait seconds for it. Errors are logged: the first real
    call tries again and reports its own."""
    preload = getattr(settings, "SLOW_CHECK_PRELOAD", None)
    if not (env_bool("SLOW_CHECK_PRELOAD", False) if preload is None else preload):
        return
    slow_checks_extra_import()
    for name in slow_check_names():
        impl = slow_check_get(name)
        try:
            if impl is not None:
                impl.preload()
        except Exception:
            logger.exception("preloading slow check %s failed", name)


def slow_checks_submit(
    *,
    tenant_id: int,
    call_id: uuid.UUID,
    stage: str,
    specs: Sequence[GuardrailSpec],
    payload: Any,
) -> list[int]:
    """One pending row per check of ``specs`` for this call's ``stage``, each sent to the
    workers once committed. Idempotent: a check already submitted for the call and stage
    keeps its row (and is not sent again). Returns the row ids, in the order of ``specs``."""
    ids: list[int] = []
    created: list[int] = []
    with transaction.atomic():
        known = set(
            Guardrail.objects.filter(
                tenant_id=tenant_id, id__in=[spec.id for spec in specs]
            ).values_list("id", flat=True)
        )
        for spec in specs:
            row, was_created = SlowCheck.objects.get_or_create(
                call_id=call_id,
                name=spec.name,
                stage=stage,
                defaults={
                    "tenant_id": tenant_id,
                    "guardrail_id": spec.id if spec.id in known else None,
                    "mode": spec.mode,
                    "action": str(spec.action),
                    "payload": payload,
                    "detail": {
                        "config": dict(spec.config),
                        "failure_mode": spec.failure_mode,
                        "guardrail": spec.id,
                    },
                },
            )
            ids.append(row.id)
            if was_created:
                created.append(row.id)
        # robust: a broker that refuses the message must not fail the call; the sweep re-sends.
        transaction.on_commit(partial(_enqueue_all, created), robust=True)
    return ids


def slow_checks_verdicts(*, ids: Sequence[int]) -> dict[int, SlowVerdict | None]:
    """Each row's verdict by id; None while it is pending (or if there is no such row)."""
    found: dict[int, SlowVerdict | None] = dict.fromkeys(ids)
    for row in SlowCheck.objects.filter(id__in=ids, status=SlowCheck.Status.DONE):
        found[row.id] = _verdict(row)
    return found


def slow_check_run(*, check_id: int) -> SlowVerdict | None:
    """Run one check (the worker's side). A done row is left as it is; a row started
    SLOW_CHECK_MAX_ATTEMPTS times already gives up with the verdict "error". Returns the
    verdict, or None when there is no such row or another delivery finished it first."""
    with transaction.atomic():
        row = SlowCheck.objects.select_for_update().filter(id=check_id).first()
        if row is None:
            logger.warning("slow check %s: no such row", check_id)
            return None
        if row.status == SlowCheck.Status.DONE:
            return _verdict(row)
        if row.attempts >= max_attempts():
            return _finish(row, error=f"gave up after {row.attempts} attempts")
        row.attempts += 1
        row.started_at = timezone.now()
        row.save(update_fields=["attempts", "started_at"])

    # The check itself runs outside any transaction: it may take seconds, and a worker killed
    # here leaves the row pending with its attempt counted.
    impl = _impl(row.name)
    if impl is None:
        return _finish(row, error=f"unknown check {row.name!r}")
    try:
        config = impl.configure(row.detail.get("config") or {})
    except ConfigError as exc:
        return _finish(row, error=f"misconfigured: {exc}")
    text, cut = payload_text(row.payload)
    try:
        result = impl.run(text, config)
    except Exception as exc:
        logger.exception("slow check %s (%s) failed", row.id, row.name)
        return _finish(row, error=f"check failed: {exc!r}"[:300])
    detail = {**result.detail, **({"text_truncated": True} if cut else {})}
    verdict = SlowCheck.Verdict.FLAG if result.flagged else SlowCheck.Verdict.PASS
    return _finish(row, verdict=verdict, score=result.score, result=detail)


def slow_checks_sweep(*, older_than_seconds: float = 30) -> int:
    """Send again the pending rows nothing has happened to for ``older_than_seconds`` (a
    worker killed as a whole loses the message it held, and a filesystem broker loses it for
    good), each at most once per that interval; give up with "error" on the ones whose
    attempts are spent. Returns how many rows it re-sent or gave up on."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=older_than_seconds)
    stale = (
        SlowCheck.objects.filter(status=SlowCheck.Status.PENDING)
        .annotate(last_activity=Coalesce("started_at", "created_at"))
        .filter(last_activity__lte=cutoff)
        .order_by("id")[:SWEEP_BATCH]
    )
    acted = 0
    for row in stale:
        if row.attempts >= max_attempts():
            if _finish(row, error=f"gave up after {row.attempts} attempts") is not None:
                acted += 1
            continue
        resent = row.detail.get("resent_at")
        if resent and datetime.fromisoformat(resent) > cutoff:
            continue  # re-sent within the interval: its message is still on its way
        with transaction.atomic():
            updated = SlowCheck.objects.filter(
                id=row.id, status=SlowCheck.Status.PENDING, attempts=row.attempts
            ).update(
                detail={
                    **row.detail,
                    "resent_at": now.isoformat(),
                    "resent": int(row.detail.get("resent", 0)) + 1,
                }
            )
            if updated:
                transaction.on_commit(partial(_enqueue_all, [row.id]), robust=True)
                acted += 1
    if acted:
        logger.info("slow check sweep: %d rows re-sent or given up", acted)
    return acted


def _enqueue_all(check_ids: list[int]) -> None:
    from governance.tasks import run_slow_check  # the task module imports this one

    for check_id in check_ids:
        run_slow_check.delay(check_id)


def _impl(name: str) -> SlowCheckImpl | None:
    impl = slow_check_get(name)
    if impl is None:
        slow_checks_extra_import()
        impl = slow_check_get(name)
    return impl


def _verdict(row: SlowCheck) -> SlowVerdict:
    detail = dict(row.detail)
    return SlowVerdict(
        id=row.id,
        name=row.name,
        stage=row.stage,
        verdict=row.verdict,
        score=row.score,
        detail=detail,
        error=str(detail.get("error", "")) if row.verdict == SlowCheck.Verdict.ERROR else "",
    )


def _finish(
    row: SlowCheck,
    *,
    verdict: str = SlowCheck.Verdict.ERROR,
    score: float | None = None,
    result: dict[str, Any] | None = None,
    error: str = "",
) -> SlowVerdict | None:
    """Store the verdict if the row is still pending, and in the same transaction the call's
    verdict record and, where one is due, an alert. None if the row was already done."""
    now = timezone.now()
    detail = {key: row.detail[key] for key in _SPEC_KEYS if key in row.detail}
    detail.update(result or {})
    if error:
        detail["error"] = error
    with transaction.atomic():
        updated = SlowCheck.objects.filter(id=row.id, status=SlowCheck.Status.PENDING).update(
            status=SlowCheck.Status.DONE,
            verdict=verdict,
            score=score,
            detail=detail,
            finished_at=now,
            payload={},  # read and judged: the row keeps the verdict, not the call's data
        )
        if not updated:
            return None  # another delivery finished it first: it wrote the record
        row.refresh_from_db()
        intent = (
            AuditRecord.objects.filter(call_id=row.call_id, kind=AuditRecord.Kind.INTENT)
            .order_by("id")
            .first()
        )
        _record(row, intent, now)
        _alert(row, intent)
    return _verdict(row)


def _record(row: SlowCheck, intent: AuditRecord | None, now: datetime) -> AuditRecord:
    """The call's ``verdict`` audit record: who and which tool as the intent says, and this
    check's verdict. Without an intent (it was never written) the verdict is kept anyway."""
    entry: dict[str, Any] = {
        "check": row.name,
        "stage": row.stage,
        "action": row.action,
        "verdict": row.verdict,
        "score": row.score,
        "mode": row.mode,
        "guardrail": row.guardrail_id,
        "slow_check": row.id,
        "attempts": row.attempts,
    }
    if row.detail.get("matched"):
        entry["matched"] = row.detail["matched"]
    if row.detail.get("error"):
        entry["error"] = row.detail["error"]
    identity: dict[str, Any] = {
        "tenant_id": row.tenant_id,
        "transport": "",
        "protocol_era": "",
        "tool": "",
        "decision": "",
        "started_at": row.created_at,
    }
    if intent is not None:
        identity.update(
            tenant_id=intent.tenant_id,
            agent_id=intent.agent_id,
            agent_name=intent.agent_name,
            transport=intent.transport,
            protocol_era=intent.protocol_era,
            protocol_version=intent.protocol_version,
            request_id=intent.request_id,
            tool=intent.tool,
            decision=intent.decision,
            rule_id=intent.rule_id,
            policy_version=intent.policy_version,
            started_at=intent.started_at,
        )
    record = AuditRecord(
        call_id=row.call_id,
        kind=AuditRecord.Kind.VERDICT,
        guardrails=[entry],
        flagged=row.verdict == SlowCheck.Verdict.FLAG,
        latency_us=round((now - row.created_at).total_seconds() * 1e6),
        created_at=now,
        **identity,
    )
    chain_append([record])
    return record


def _alert(row: SlowCheck, intent: AuditRecord | None) -> Alert | None:
    """An alert for a reviewer when a post-hoc check flags the call (the call went on), or a
    fail-closed check errs. Guarded by call, check and stage, so it is written once."""
    flagged = row.verdict == SlowCheck.Verdict.FLAG and row.mode == "post_hoc"
    failed = row.verdict == SlowCheck.Verdict.ERROR and row.detail.get("failure_mode") == "closed"
    if not (flagged or failed):
        return None
    tool = intent.tool if intent is not None else ""
    what = f"{row.name} flagged" if flagged else f"{row.name} failed on"
    target = tool or f"call {row.call_id}"
    detail: dict[str, Any] = {
        "check": row.name,
        "stage": row.stage,
        "verdict": row.verdict,
        "score": row.score,
        "call_id": str(row.call_id),
        "slow_check": row.id,
        "tool": tool,
    }
    for key in ("matched", "error"):
        if row.detail.get(key):
            detail[key] = row.detail[key]
    alert, _ = Alert.objects.get_or_create(
        tenant_id=row.tenant_id,
        kind=Alert.Kind.GUARDRAIL_FLAGGED,
        call_id=row.call_id,
        title=f"{what} {target} ({row.stage})"[:300],
        defaults={"detail": detail},
    )
    return alert
