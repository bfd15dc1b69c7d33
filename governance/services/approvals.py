"""Approval requests: a call held for a reviewer's decision, bound to exactly that call.

The row is the truth (DESIGN.md §5: never carry a decision only on the channel layer). A
gateway creates the request and holds the call; a reviewer decides in the dashboard or the
API; the gateway reads the decision back (its poll, hastened by a nudge) and releases the
call once, only if the arguments' digest is the one decided on. Nobody deciding in time
expires it; the agent leaving cancels it; the gateway stopping interrupts it. Every step is
an ``approval`` record in the tenant's audit chain, in the transaction of the step.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from audit.chainproof import canonical
from audit.models import AuditRecord
from audit.services import action_record
from governance.models import ApprovalRequest
from governance.services.versions import layer_nudge

logger = logging.getLogger(__name__)

Status = ApprovalRequest.Status
GATEWAY = "gateway"  # the actor of the steps nobody decided: expiry, cancel, interruption


class ApprovalError(Exception):
    """A decision that cannot be made; the message says why, for the reviewer."""


class ApprovalClosed(ApprovalError):
    """The request is no longer pending (decided, expired, cancelled or interrupted)."""


class FourEyesViolation(ApprovalError):
    """The person responsible for the agent may not approve its requests."""


class DigestMismatch(ApprovalError):
    """The decision names other arguments than the request's."""


def arguments_digest(arguments: Any) -> str:
    """SHA-256 of the RFC 8785 canonical JSON of ``arguments``: what a decision is bound to,
    and what an integration can recompute from the arguments it shows."""
    return hashlib.sha256(canonical(arguments)).hexdigest()


def _record(
    approval: ApprovalRequest, *, actor: str, before: str | None, extra: dict[str, Any]
) -> AuditRecord:
    """The chain record of one step: ``diff`` is ``{"status": [before, after], …}``;
    ``reason`` the rule's on the first step, then the reviewer's comment or the gateway's why."""
    return action_record(
        kind=AuditRecord.Kind.APPROVAL,
        tenant=approval.tenant_id,
        actor=actor,
        action=approval.comment if before is not None else approval.reason,
        subject=f"approval {approval.id}",
        diff={"status": [before, approval.status], **extra},
        call_id=approval.call_id,
        started_at=approval.created_at,
        agent_id=approval.agent_id,
        agent_name=approval.agent_name,
        tool=approval.tool,
        decision=AuditRecord.Decision.REQUIRE_APPROVAL,
        rule_id=approval.rule_id,
        policy_version=approval.policy_version,
    )


def approvals_nudge(*, tenant_id: int, approval_id: uuid.UUID) -> None:
    """After commit: tell the gateways (and the dashboards) that a request moved. Only a
    nudge: each gateway also polls the rows of the calls it holds."""
    layer_nudge({"type": "approval.changed", "tenant": tenant_id, "approval": str(approval_id)})


def _on_commit_nudge(approval: ApprovalRequest) -> None:
    tenant_id, approval_id = approval.tenant_id, approval.id
    transaction.on_commit(lambda: approvals_nudge(tenant_id=tenant_id, approval_id=approval_id))


@transaction.atomic
def approval_request_create(
    *,
    tenant_id: int,
    agent_id: int,
    agent_name: str,
    call_id: uuid.UUID,
    tool: str,
    arguments: dict[str, Any],
    recorded_arguments: dict[str, Any],
    rule_id: int | None,
    reason: str,
    policy_version: int,
    node: str,
    timeout_seconds: float,
    lease_seconds: float,
) -> ApprovalRequest:
    """Persist the request for the call about to be held; its ``requested`` record commits
    with it. ``arguments`` are what would go upstream (the digest binds them);
    ``recorded_arguments`` what the reviewer and the trail see."""
    now = timezone.now()
    approval = ApprovalRequest.objects.create(
        tenant_id=tenant_id,
        agent_id=agent_id,
        agent_name=agent_name,
        call_id=call_id,
        tool=tool,
        arguments=recorded_arguments,
        arguments_digest=arguments_digest(arguments),
        rule_id=rule_id,
        reason=reason[:500],
        policy_version=policy_version,
        created_at=now,
        expires_at=now + timedelta(seconds=timeout_seconds),
        node=node,
        lease_until=now + timedelta(seconds=lease_seconds),
    )
    _record(
        approval,
        actor=agent_name,
        before=None,
        extra={
            "arguments_digest": approval.arguments_digest,
            "expires_at": approval.expires_at.isoformat(),
        },
    )
    _on_commit_nudge(approval)
    return approval


def approval_decide(
    *,
    approval: ApprovalRequest,
    user: AbstractBaseUser,
    approve: bool,
    comment: str = "",
    digest: str | None = None,
) -> ApprovalRequest:
    """A reviewer's decision. Refused when the request is no longer pending (or has just
    expired), when ``digest`` is given and is not the request's, and — where the tenant
    requires four eyes — when ``user`` is the person responsible for the agent. Whether the
    user may review this tenant at all is the interface's check (``member_role``)."""
    with transaction.atomic():
        approval = (
            ApprovalRequest.objects.select_for_update(of=("self",))  # agent is nullable
            .select_related("tenant", "agent")
            .get(pk=approval.pk)
        )
        if approval.status != Status.PENDING:
            raise ApprovalClosed(_closed_message(approval))
        if approval.expires_at <= timezone.now():
            raise ApprovalClosed("this request has expired; the call was denied")
        if digest is not None and digest != approval.arguments_digest:
            raise DigestMismatch(
                "the arguments you decided on are not this request's: reload it and decide "
                "on what it shows"
            )
        owner_id = approval.agent.owner_id if approval.agent is not None else None
        if approve and approval.tenant.four_eyes and owner_id is not None and owner_id == user.pk:
            raise FourEyesViolation(
                f"four eyes: you are responsible for agent {approval.agent_name!r}, so "
                "another reviewer must approve its requests"
            )
        approval.status = Status.APPROVED if approve else Status.DENIED
        approval.decided_at = timezone.now()
        approval.decided_by = user  # type: ignore[assignment]
        approval.decided_by_name = user.get_username()[:150]
        approval.comment = comment
        approval.save(
            update_fields=["status", "decided_at", "decided_by", "decided_by_name", "comment"]
        )
        _record(approval, actor=approval.decided_by_name, before=Status.PENDING, extra={})
        _on_commit_nudge(approval)
    return approval


def _closed_message(approval: ApprovalRequest) -> str:
    if approval.status in (Status.APPROVED, Status.DENIED):
        return f"already {approval.status} by {approval.decided_by_name}"
    return f"this request is {approval.status}; the call is no longer waiting"


@transaction.atomic
def approval_close(*, approval_id: uuid.UUID, status: str, why: str) -> ApprovalRequest:
    """The gateway ends a pending request nobody decided: ``expired``, ``cancelled`` or
    ``interrupted``. If a reviewer decided first, that decision stands and is returned."""
    approval = ApprovalRequest.objects.select_for_update().get(pk=approval_id)
    if approval.status != Status.PENDING:
        return approval
    approval.status = status
    approval.decided_at = timezone.now()
    approval.decided_by_name = GATEWAY
    approval.comment = why
    approval.save(update_fields=["status", "decided_at", "decided_by_name", "comment"])
    _record(approval, actor=GATEWAY, before=Status.PENDING, extra={})
    _on_commit_nudge(approval)
    return approval


@transaction.atomic
def approval_release(*, approval_id: uuid.UUID, digest: str) -> ApprovalRequest:
    """Use an approval for its call, once: it must be approved, unused, and bound to these
    arguments (``digest``). Raises ApprovalError otherwise."""
    approval = ApprovalRequest.objects.select_for_update().get(pk=approval_id)
    if approval.status != Status.APPROVED:
        raise ApprovalClosed(_closed_message(approval))
    if approval.released_at is not None:
        raise ApprovalClosed("this approval was already used: an approval releases one call")
    if digest != approval.arguments_digest:
        raise DigestMismatch("the approval was given for other arguments than this call's")
    approval.released_at = timezone.now()
    approval.save(update_fields=["released_at"])
    return approval


def approvals_renew(*, ids: list[uuid.UUID], lease_seconds: float) -> None:
    """The holding gateway vouches it still holds these calls."""
    until = timezone.now() + timedelta(seconds=lease_seconds)
    ApprovalRequest.objects.filter(pk__in=ids, status=Status.PENDING).update(lease_until=until)


def approvals_interrupt(
    *, node: str | None = None, now: datetime | None = None, why: str = ""
) -> list[ApprovalRequest]:
    """Resolve pending requests whose gateway is gone: those held by ``node`` (a gateway
    starting again under its old name), or else those whose lease lapsed (a gateway that
    died and never came back; beat's sweep). Each gets its ``interrupted`` record."""
    stale = ApprovalRequest.objects.filter(status=Status.PENDING)
    if node is not None:
        stale = stale.filter(node=node)
    else:
        stale = stale.filter(lease_until__lt=now or timezone.now())
    why = why or "the gateway holding this call stopped before a decision was applied"
    return [
        approval_close(approval_id=pk, status=Status.INTERRUPTED, why=why)
        for pk in stale.values_list("pk", flat=True)
    ]
