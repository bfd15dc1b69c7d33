"""The overview's numbers: calls, denials, approvals, guardrail hits and latency, per minute
over the last hour and per 15 minutes over the last day.

Calls are counted from ``outcome`` records (one per call). Latency percentiles are computed
here, in Python, from every outcome's ``latency_us`` in the window: simple and exact, but it
reads a day's latencies on each page view. Past some hundred thousand calls a day this wants
a per-minute rollup table (or PostgreSQL's ``percentile_cont``) instead. Calls held for
approval count as calls but not in the latency: their wait is a reviewer's, not the gateway's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from audit.models import AuditRecord
from governance.dashboard.charts import chart_svg
from governance.dashboard.selectors import latency_text, pending_count
from governance.models import ApprovalRequest, Tenant

Outcome = AuditRecord.Outcome
Status = ApprovalRequest.Status


@dataclass(frozen=True)
class Window:
    """``buckets`` consecutive intervals of ``step``, aligned to multiples of ``step``; the
    last one holds now (so it is still filling)."""

    title: str
    start: datetime
    step: timedelta
    buckets: int
    tick: timedelta  # an axis label at each multiple of this

    @property
    def end(self) -> datetime:
        return self.start + self.step * self.buckets

    def index(self, moment: datetime) -> int | None:
        if moment < self.start or moment >= self.end:
            return None
        return int((moment - self.start) / self.step)

    def bucket_start(self, index: int) -> datetime:
        return self.start + self.step * index

    def is_tick(self, index: int) -> bool:
        return self.bucket_start(index).timestamp() % self.tick.total_seconds() == 0


def window(
    now: datetime, *, title: str, span: timedelta, step: timedelta, tick: timedelta
) -> Window:
    seconds = step.total_seconds()
    end = datetime.fromtimestamp((now.timestamp() // seconds + 1) * seconds, tz=UTC)
    buckets = int(span / step)
    return Window(title=title, start=end - step * buckets, step=step, buckets=buckets, tick=tick)


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None for none)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def counts(win: Window, moments: Iterable[datetime]) -> list[float | None]:
    values: list[float | None] = [0] * win.buckets
    for moment in moments:
        index = win.index(moment)
        if index is not None:
            values[index] = (values[index] or 0) + 1
    return values


def latency_percentiles(
    win: Window, samples: Iterable[tuple[datetime, int]]
) -> tuple[list[float | None], list[float | None]]:
    """Per bucket, the p50 and p99 of the latencies, in milliseconds (None: no calls)."""
    per_bucket: dict[int, list[float]] = defaultdict(list)
    for moment, latency_us in samples:
        index = win.index(moment)
        if index is not None:
            per_bucket[index].append(latency_us / 1000)
    p50 = [percentile(per_bucket.get(i, []), 50) for i in range(win.buckets)]
    p99 = [percentile(per_bucket.get(i, []), 99) for i in range(win.buckets)]
    return p50, p99


@dataclass(frozen=True)
class Series:
    name: str  # shown in the legend
    key: str  # the CSS class that colours it
    values: list[float | None]

    @property
    def total(self) -> float:
        return sum(v for v in self.values if v is not None)


@dataclass(frozen=True)
class Chart:
    title: str
    unit: str
    kind: str  # "bars" (one series) or "lines"
    window: Window
    series: list[Series]

    @property
    def svg(self) -> str:
        return chart_svg(self)


@dataclass(frozen=True)
class Overview:
    calls_hour: int
    calls_day: int
    denials_day: int
    hits_day: int
    blocked_day: int
    pending: int
    p50_hour: str
    p99_hour: str
    panels: list[tuple[Window, list[Chart]]]


def overview(*, tenant: Tenant, now: datetime | None = None) -> Overview:
    now = now or timezone.now()
    hour = window(
        now,
        title="Last hour",
        span=timedelta(hours=1),
        step=timedelta(minutes=1),
        tick=timedelta(minutes=10),
    )
    day = window(
        now,
        title="Last 24 hours",
        span=timedelta(hours=24),
        step=timedelta(minutes=15),
        tick=timedelta(hours=3),
    )
    since = min(hour.start, day.start)
    records = AuditRecord.objects.filter(tenant=tenant, created_at__gte=since)
    # A call held for approval waited for a person: its latency is not the gateway's.
    calls = [
        (t, o, None if decision == AuditRecord.Decision.REQUIRE_APPROVAL else latency)
        for t, o, latency, decision in records.filter(kind=AuditRecord.Kind.OUTCOME).values_list(
            "created_at", "outcome", "latency_us", "decision"
        )
    ]
    # A call can be flagged by several records (intent, verdicts, outcome): count it once.
    hit_at: dict[object, datetime] = {}
    flagged = records.filter(Q(flagged=True) | Q(outcome=Outcome.BLOCKED)).order_by("seq")
    for created_at, call_id in flagged.values_list("created_at", "call_id"):
        hit_at.setdefault(call_id, created_at)
    approvals = ApprovalRequest.objects.filter(tenant=tenant)
    requested = list(approvals.filter(created_at__gte=since).values_list("created_at", flat=True))
    decided = list(
        approvals.filter(
            decided_at__gte=since, status__in=[Status.APPROVED, Status.DENIED, Status.EXPIRED]
        ).values_list("decided_at", "status")
    )

    def charts(win: Window) -> list[Chart]:
        p50, p99 = latency_percentiles(
            win, ((t, latency) for t, _, latency in calls if latency is not None)
        )
        return [
            Chart(
                "Calls",
                "calls",
                "bars",
                win,
                [Series("calls", "calls", counts(win, (t for t, _, _ in calls)))],
            ),
            Chart(
                "Denials",
                "denials",
                "bars",
                win,
                [
                    Series(
                        "denied",
                        "denied",
                        counts(win, (t for t, o, _ in calls if o == Outcome.DENIED)),
                    )
                ],
            ),
            Chart(
                "Approvals",
                "requests",
                "lines",
                win,
                [
                    Series("requested", "requested", counts(win, requested)),
                    Series(
                        "approved",
                        "approved",
                        counts(win, (t for t, s in decided if s == Status.APPROVED)),
                    ),
                    Series(
                        "denied or expired",
                        "denied",
                        counts(win, (t for t, s in decided if s != Status.APPROVED)),
                    ),
                ],
            ),
            Chart(
                "Guardrail hits",
                "calls",
                "lines",
                win,
                [
                    Series("calls with a finding", "flagged", counts(win, hit_at.values())),
                    Series(
                        "blocked",
                        "blocked",
                        counts(win, (t for t, o, _ in calls if o == Outcome.BLOCKED)),
                    ),
                ],
            ),
            Chart(
                "Latency",
                "ms",
                "lines",
                win,
                [Series("p50", "p50", p50), Series("p99", "p99", p99)],
            ),
        ]

    day_calls = [(t, o, latency) for t, o, latency in calls if day.index(t) is not None]
    hour_latency = [latency for t, _, latency in calls if t >= hour.start and latency is not None]
    p50, p99 = percentile(hour_latency, 50), percentile(hour_latency, 99)
    return Overview(
        calls_hour=sum(1 for t, _, _ in calls if hour.index(t) is not None),
        calls_day=len(day_calls),
        denials_day=sum(1 for _, o, _ in day_calls if o == Outcome.DENIED),
        hits_day=sum(1 for t in hit_at.values() if day.index(t) is not None),
        blocked_day=sum(1 for _, o, _ in day_calls if o == Outcome.BLOCKED),
        pending=pending_count(tenant=tenant),
        p50_hour=latency_text(round(p50)) if p50 is not None else "-",
        p99_hour=latency_text(round(p99)) if p99 is not None else "-",
        panels=[(hour, charts(hour)), (day, charts(day))],
    )
