"""The overview's numbers and its server-drawn SVG charts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from governance.dashboard.charts import chart_svg, nice_ceiling
from governance.dashboard.stats import (
    Chart,
    Series,
    counts,
    latency_percentiles,
    overview,
    percentile,
    window,
)
from governance.services.approvals import approval_decide
from tests.governance.dashboard.conftest import World, call

NOW = datetime(2030, 5, 6, 12, 34, 56, tzinfo=UTC)


def hour(now: datetime = NOW):
    return window(
        now,
        title="Last hour",
        span=timedelta(hours=1),
        step=timedelta(minutes=1),
        tick=timedelta(minutes=10),
    )


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([7], 99) == 7
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([5, 1, 3], 50) == 3


def test_window_buckets_are_aligned_and_end_with_now() -> None:
    win = hour()
    assert win.buckets == 60
    assert win.start == datetime(2030, 5, 6, 11, 35, tzinfo=UTC)
    assert win.index(NOW) == 59
    assert win.index(win.start) == 0
    assert win.index(win.start - timedelta(microseconds=1)) is None
    assert win.index(win.end) is None
    assert [i for i in range(60) if win.is_tick(i)] == [5, 15, 25, 35, 45, 55]
    day = window(
        NOW,
        title="day",
        span=timedelta(hours=24),
        step=timedelta(minutes=15),
        tick=timedelta(hours=3),
    )
    assert day.buckets == 96
    assert day.end == datetime(2030, 5, 6, 12, 45, tzinfo=UTC)


def test_counts_and_latency_per_bucket() -> None:
    win = hour()
    at = win.start + timedelta(seconds=30)
    assert counts(win, [at, at, NOW, NOW - timedelta(hours=2)])[:1] == [2]
    assert counts(win, [NOW])[59] == 1
    p50, p99 = latency_percentiles(win, [(at, 1000), (at, 3000), (at, 900_000)])
    assert (p50[0], p99[0]) == (3.0, 900.0)
    assert p50[1] is None  # no calls: no point


def test_nice_ceiling() -> None:
    assert [nice_ceiling(v) for v in (0, 1, 3, 7, 12, 180, 0.3)] == [1, 1, 5, 10, 20, 200, 0.5]


def test_chart_svg_draws_bars_lines_and_gaps() -> None:
    win = hour()
    bars = Chart("Calls", "calls", "bars", win, [Series("calls", "calls", [0] * 59 + [4])])
    svg = chart_svg(bars)
    assert svg.startswith('<svg class="chart bars" viewBox="0 0 640 160" role="img"')
    assert svg.count("<rect") == 1
    assert "12:34 · 4 calls" in svg
    assert ">11:40<" in svg
    assert ">12:30<" in svg
    values = [None] * 60
    values[10:13], values[20] = [1.0, 2.0, 3.0], 5.0
    lines = Chart("Latency", "ms", "lines", win, [Series("p<50>", "p50", values)])
    svg = chart_svg(lines)
    assert svg.count("<polyline") == 1  # the lone point after the gap is a dot only
    assert svg.count("<circle") == 4
    assert "p&lt;50&gt;" in svg
    assert "p<50>" not in svg


@pytest.mark.django_db
def test_overview_counts_the_tenants_calls(a: World, b: World, admin) -> None:
    call(a.tenant, a.agent, a.tool, latency_us=10_000)
    call(a.tenant, a.agent, a.tool, at=NOW.replace(year=2020))  # long ago: not counted
    # A call held for approval for 5 minutes: a call, but a person's wait is not latency.
    call(a.tenant, a.agent, a.tool, decision="require_approval", latency_us=300_000_000)
    approval_decide(approval=a.approval, user=admin, approve=False)
    stats = overview(tenant=a.tenant)
    assert (stats.calls_hour, stats.calls_day, stats.denials_day) == (5, 5, 1)
    assert (stats.hits_day, stats.blocked_day, stats.pending) == (1, 1, 0)
    assert stats.p50_hour == "2.0 ms"  # of 1.5, 2.0 and 10 ms
    assert stats.p99_hour == "10.0 ms"
    (_hour_window, hour_charts), (_day_window, day_charts) = stats.panels
    assert [c.title for c in hour_charts] == [
        "Calls",
        "Denials",
        "Approvals",
        "Guardrail hits",
        "Latency",
    ]
    assert sum(hour_charts[0].series[0].values) == 5
    latency = hour_charts[4].series
    assert max(v for v in latency[1].values if v is not None) == 10.0  # p99: not the 5 min
    approvals = {s.name: s.total for s in day_charts[2].series}
    assert approvals == {"requested": 1, "approved": 0, "denied or expired": 1}
    assert {s.name: s.total for s in day_charts[3].series} == {
        "calls with a finding": 1,
        "blocked": 1,
    }
