"""The dashboard's reads. Each takes the tenant first and reads only that tenant's rows: the
views never filter by an id from the URL without going through one of these.

The charts of the overview are in ``stats.py``; the rows the pages show are wrapped in small
dataclasses that carry what a template cannot compute (pretty JSON, latency text, findings).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from audit.models import AuditRecord, ChainHead
from audit.selectors import AuditFilters, audit_call_story, audit_record_search
from governance.engine.types import exposed_tool_name, token_problem
from governance.models import Agent, AgentToken, Alert, ApprovalRequest, Tenant, Tool
from governance.selectors import approval_list

FEED_SIZE = 50  # calls on the feed page, and at most this many per pushed batch
PAGE_SIZE = 50  # records per page of the audit explorer and the violations list
RECENT_DECISIONS = 20

Outcome = AuditRecord.Outcome
Kind = AuditRecord.Kind
Pending = ApprovalRequest.Status.PENDING


# --- display helpers (pure) ---------------------------------------------------------------------
def latency_text(latency_us: int | None) -> str:
    if latency_us is None:
        return ""
    if latency_us < 1000:
        return f"{latency_us} µs"
    if latency_us < 1_000_000:
        return f"{latency_us / 1000:.1f} ms"
    return f"{latency_us / 1_000_000:.2f} s"


def pretty_json(value: Any) -> str:
    """Indented JSON for a <pre>; the template escapes it."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def verdict_lines(guardrails: Any) -> list[str]:
    """What each guardrail check that did not pass found: "pii flag (input): email at $.to"."""
    lines = []
    for verdict in guardrails if isinstance(guardrails, list) else []:
        if not isinstance(verdict, dict) or verdict.get("verdict", "pass") == "pass":
            continue
        head = f"{verdict.get('check', '?')} {verdict.get('verdict', '')}"
        if verdict.get("stage"):
            head += f" ({verdict['stage']})"
        found = []
        for finding in verdict.get("findings") or []:
            if isinstance(finding, dict):
                where = f" at {finding['path']}" if finding.get("path") else ""
                detail = f" ({finding['detail']})" if finding.get("detail") else ""
                found.append(f"{finding.get('kind', '?')}{where}{detail}")
        if verdict.get("score") is not None:
            found.append(f"score {verdict['score']:.2f}")
        if verdict.get("error"):
            found.append(f"error: {verdict['error']}")
        lines.append(f"{head}: {'; '.join(found)}" if found else head)
    return lines


@dataclass(frozen=True)
class RecordRow:
    """An audit record as the pages show it."""

    record: AuditRecord

    @property
    def latency(self) -> str:
        return latency_text(self.record.latency_us)

    @property
    def findings(self) -> list[str]:
        return verdict_lines(self.record.guardrails)

    @property
    def flag_checks(self) -> list[str]:
        """The checks that did not pass, by name, for a compact column."""
        guardrails = self.record.guardrails if isinstance(self.record.guardrails, list) else []
        return sorted(
            {
                str(v.get("check", "?"))
                for v in guardrails
                if isinstance(v, dict) and v.get("verdict", "pass") != "pass"
            }
        )

    @property
    def change(self) -> str:
        """An approval step's move: "requested", or "pending → approved"."""
        diff = self.record.diff if isinstance(self.record.diff, dict) else {}
        status = diff.get("status")
        if self.record.kind != Kind.APPROVAL or not isinstance(status, list) or len(status) != 2:
            return ""
        before, after = status
        return "requested" if before is None else f"{before} → {after}"

    @property
    def arguments_json(self) -> str:
        return pretty_json(self.record.arguments)

    @property
    def diff_json(self) -> str:
        return pretty_json(self.record.diff) if self.record.diff else ""

    @property
    def shadow_json(self) -> str:
        return pretty_json(self.record.shadow) if self.record.shadow else ""


# --- the chain head and the feed ----------------------------------------------------------------
def chain_head_seq(*, tenant_id: int) -> int:
    """The seq of the tenant's latest record (0: none yet). Every record up to it is
    committed: the head moves in the transaction that inserts them."""
    seq = ChainHead.objects.filter(tenant_id=tenant_id).values_list("seq", flat=True).first()
    return seq or 0


def feed_list(
    *, tenant: Tenant, upto: int, after: int = 0, limit: int = FEED_SIZE
) -> list[RecordRow]:
    """The latest calls (one ``outcome`` record each) with ``after < seq ≤ upto``, newest
    first. Bounding by a head read beforehand keeps a page and its stream from overlapping."""
    records = AuditRecord.objects.filter(
        tenant=tenant, kind=Kind.OUTCOME, seq__gt=after, seq__lte=upto
    ).order_by("-seq")[:limit]
    return [RecordRow(r) for r in records]


def approvals_moved(*, tenant: Tenant, after: int, upto: int) -> bool:
    """Whether an approval request was made or closed in ``after < seq ≤ upto``."""
    return AuditRecord.objects.filter(
        tenant=tenant, kind=Kind.APPROVAL, seq__gt=after, seq__lte=upto
    ).exists()


# --- approvals ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApprovalRow:
    approval: ApprovalRequest
    now: datetime

    @property
    def arguments_json(self) -> str:
        return pretty_json(self.approval.arguments)

    @property
    def seconds_left(self) -> int:
        return max(0, int((self.approval.expires_at - self.now).total_seconds()))

    @property
    def expired(self) -> bool:
        return self.approval.expires_at <= self.now


@dataclass(frozen=True)
class ApprovalQueue:
    pending: list[ApprovalRow]
    decided: list[ApprovalRow]


def pending_count(*, tenant: Tenant) -> int:
    return approval_list(tenant=tenant, status=Pending).count()


def approval_queue(*, tenant: Tenant, recent: int = RECENT_DECISIONS) -> ApprovalQueue:
    """The requests waiting for a decision (newest first) and the latest closed ones."""
    now = timezone.now()
    pending = approval_list(tenant=tenant, status=Pending)
    decided = approval_list(tenant=tenant).exclude(status=Pending).order_by("-decided_at")
    return ApprovalQueue(
        pending=[ApprovalRow(a, now) for a in pending],
        decided=[ApprovalRow(a, now) for a in decided[:recent]],
    )


# --- the audit explorer and a call's story ------------------------------------------------------
@dataclass(frozen=True)
class AuditPage:
    rows: list[RecordRow]
    newer: int | None  # ?after= for the page of newer records
    older: int | None  # ?before= for the page of older records


def audit_page(
    *,
    tenant: Tenant,
    filters: AuditFilters,
    before: int | None = None,
    after: int | None = None,
    size: int = PAGE_SIZE,
) -> AuditPage:
    """One page of the matching records, newest first, by seq (keyset): a page stays the same
    while new records arrive, and no page needs a count of the whole trail."""
    matching = audit_record_search(tenant=tenant, filters=filters)
    if after is not None:
        chunk = list(matching.filter(seq__gt=after).order_by("seq")[: size + 1])
        more_newer = len(chunk) > size
        records = list(reversed(chunk[:size]))
        more_older = bool(records) and matching.filter(seq__lt=records[-1].seq).exists()
    else:
        scope = matching if before is None else matching.filter(seq__lt=before)
        chunk = list(scope.order_by("-seq")[: size + 1])
        more_older = len(chunk) > size
        records = chunk[:size]
        more_newer = (
            before is not None
            and bool(records)
            and matching.filter(seq__gt=records[0].seq).exists()
        )
    return AuditPage(
        rows=[RecordRow(r) for r in records],
        newer=records[0].seq if more_newer else None,
        older=records[-1].seq if more_older else None,
    )


def filter_choices(*, tenant: Tenant) -> tuple[list[str], list[str]]:
    """Suggestions for the explorer's agent and tool fields: the tenant's agents and the
    tools of its catalog, by the names the trail records."""
    agents = list(
        Agent.objects.filter(tenant=tenant).order_by("name").values_list("name", flat=True)
    )
    tools = Tool.objects.filter(server__tenant=tenant).values_list("server__name", "name")
    return agents, sorted({exposed_tool_name(server, name) for server, name in tools})


@dataclass(frozen=True)
class CallStory:
    call_id: uuid.UUID
    rows: list[RecordRow]
    approval: ApprovalRequest | None
    alerts: list[Alert]

    @property
    def first(self) -> AuditRecord:
        return self.rows[0].record

    @property
    def outcome(self) -> AuditRecord | None:
        return next((r.record for r in self.rows if r.record.kind == Kind.OUTCOME), None)

    @property
    def latency(self) -> str:
        outcome = self.outcome
        return latency_text(outcome.latency_us) if outcome is not None else ""


def call_story(*, tenant: Tenant, call_id: uuid.UUID) -> CallStory | None:
    """Every record of one call in the order written, its approval request and its alerts;
    None when the tenant has no such call."""
    records = audit_call_story(tenant=tenant, call_id=call_id)
    if not records:
        return None
    return CallStory(
        call_id=call_id,
        rows=[RecordRow(r) for r in records],
        approval=approval_list(tenant=tenant).filter(call_id=call_id).first(),
        alerts=list(Alert.objects.filter(tenant=tenant, call_id=call_id).order_by("created_at")),
    )


# --- agents -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenRow:
    token: AgentToken
    state: str  # live | expired | revoked


@dataclass(frozen=True)
class AgentRow:
    agent: Agent
    online: bool
    calls: int
    denials: int
    tokens: list[TokenRow]


def token_state(token: AgentToken, now: datetime) -> str:
    """``live``, ``revoked`` or ``expired``: the gateway's own judgement of the token."""
    revoked = token.revoked_at is not None
    problem = token_problem(revoked=revoked, expires_at=token.expires_at, now=now)
    return "live" if problem is None else problem.removeprefix("token ")


def agent_rows(*, tenant: Tenant, now: datetime | None = None) -> list[AgentRow]:
    """Each agent: online now (seen within twice AGENT_PRESENCE_SECONDS), its calls and
    denials of the last 24 hours (from outcome records), and its tokens, newest first."""
    now = now or timezone.now()
    online_since = now - timedelta(seconds=2 * settings.AGENT_PRESENCE_SECONDS)
    counts = {
        row["agent_id"]: row
        for row in AuditRecord.objects.filter(
            tenant=tenant, kind=Kind.OUTCOME, created_at__gte=now - timedelta(hours=24)
        )
        .values("agent_id")
        .annotate(calls=Count("id"), denials=Count("id", filter=Q(outcome=Outcome.DENIED)))
    }
    agents = Agent.objects.filter(tenant=tenant).prefetch_related("tokens").order_by("name")
    rows = []
    for agent in agents:
        count = counts.get(agent.id, {})
        tokens = sorted(agent.tokens.all(), key=lambda t: t.created_at, reverse=True)
        rows.append(
            AgentRow(
                agent=agent,
                online=agent.is_active
                and agent.last_seen_at is not None
                and agent.last_seen_at >= online_since,
                calls=count.get("calls", 0),
                denials=count.get("denials", 0),
                tokens=[TokenRow(t, token_state(t, now)) for t in tokens],
            )
        )
    return rows


def token_get(*, tenant: Tenant, token_id: int) -> AgentToken | None:
    return (
        AgentToken.objects.select_related("agent").filter(pk=token_id, agent__tenant=tenant).first()
    )


# --- violations ---------------------------------------------------------------------------------
def guardrail_hits(
    *, tenant: Tenant, before: int | None = None, limit: int = PAGE_SIZE
) -> list[RecordRow]:
    """Records a guardrail flagged, or whose call it blocked, newest first."""
    hits = AuditRecord.objects.filter(Q(flagged=True) | Q(outcome=Outcome.BLOCKED), tenant=tenant)
    if before is not None:
        hits = hits.filter(seq__lt=before)
    return [RecordRow(r) for r in hits.order_by("-seq")[:limit]]


def quarantined_tools(*, tenant: Tenant) -> list[Tool]:
    tools = Tool.objects.filter(server__tenant=tenant, status=Tool.Status.QUARANTINED)
    return list(tools.select_related("server").order_by("server__name", "name"))


def alert_list(*, tenant: Tenant, resolved: bool = False, limit: int = 100) -> list[Alert]:
    """Open alerts, or the latest resolved ones; newest first."""
    alerts = Alert.objects.filter(tenant=tenant, resolved_at__isnull=not resolved)
    order = "-resolved_at" if resolved else "-created_at"
    return list(alerts.select_related("tool", "tool__server").order_by(order)[:limit])


def alert_get(*, tenant: Tenant, alert_id: int) -> Alert | None:
    return Alert.objects.filter(tenant=tenant, pk=alert_id).first()
