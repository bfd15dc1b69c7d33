"""The rate-limit counters: both backends run the same tests; the Redis one against a real
redis-server. Time is passed as ``now=`` so every expectation is exact."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from governance.engine.limits import LimitSpec
from orchestrator.ratelimit import (
    CONCURRENCY_RETRY_AFTER,
    Lease,
    RateLimited,
    RateLimiter,
    RateLimitUnavailable,
)

MakeLimiter = Callable[..., RateLimiter]


def limit(id: int = 1, **fields: Any) -> LimitSpec:
    return LimitSpec(id=id, tenant_id=7, **fields)


@pytest.fixture(params=["memory", "redis"])
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return ""
    url: str = request.getfixturevalue("redis_server")
    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


@pytest.fixture
async def make_limiter(backend_url: str) -> AsyncIterator[MakeLimiter]:
    made: list[RateLimiter] = []

    def make(lease_seconds: float = 300.0) -> RateLimiter:
        made.append(RateLimiter(redis_url=backend_url, lease_seconds=lease_seconds))
        return made[-1]

    yield make
    for limiter in made:
        await limiter.close()


@pytest.fixture
def limiter(make_limiter: MakeLimiter) -> RateLimiter:
    return make_limiter()


@pytest.fixture
async def redis_limiters(redis_server: str) -> AsyncIterator[MakeLimiter]:
    with redis.Redis.from_url(redis_server) as client:
        client.flushdb()
    made: list[RateLimiter] = []

    def make(lease_seconds: float = 300.0) -> RateLimiter:
        made.append(RateLimiter(redis_url=redis_server, lease_seconds=lease_seconds))
        return made[-1]

    yield make
    for limiter in made:
        await limiter.close()


async def call(
    limiter: RateLimiter,
    limits: list[LimitSpec],
    now: float,
    agent_id: int = 1,
    tool: str = "git__commit",
) -> Lease:
    return await limiter.acquire(agent_id=agent_id, tool=tool, limits=limits, now=now)


async def refused(
    limiter: RateLimiter,
    limits: list[LimitSpec],
    now: float,
    agent_id: int = 1,
    tool: str = "git__commit",
) -> RateLimited:
    with pytest.raises(RateLimited) as info:
        await call(limiter, limits, now, agent_id, tool)
    return info.value


# --- calls per window ------------------------------------------------------------------------


async def test_admits_n_calls_then_refuses_with_exact_retry_after(limiter: RateLimiter) -> None:
    limits = [limit(calls=3, window_seconds=10)]
    for now in (0, 1, 2):
        await call(limiter, limits, now)

    exc = await refused(limiter, limits, 4)

    assert exc.limit == limits[0]
    assert exc.retry_after == pytest.approx(6)  # the call at 0 leaves the window at 10
    assert exc.reason == "rate limit: 3 calls per 10 s per agent; retry after 6.0 s"


async def test_retry_after_in_reason_is_rounded_up(limiter: RateLimiter) -> None:
    limits = [limit(calls=1, window_seconds=10)]
    await call(limiter, limits, 0)

    exc = await refused(limiter, limits, 5.875)

    assert exc.retry_after == pytest.approx(4.125)
    assert exc.reason.endswith("retry after 4.2 s")


async def test_sliding_window_admits_again_after_time_passes(limiter: RateLimiter) -> None:
    limits = [limit(calls=2, window_seconds=10)]
    await call(limiter, limits, 0)
    await call(limiter, limits, 4)
    assert (await refused(limiter, limits, 9.5)).retry_after == pytest.approx(0.5)

    await call(limiter, limits, 10)  # exactly when the call at 0 leaves

    assert (await refused(limiter, limits, 12)).retry_after == pytest.approx(2)
    await call(limiter, limits, 14)
    assert (await refused(limiter, limits, 14)).retry_after == pytest.approx(6)


async def test_window_holds_in_any_interval_not_only_after_a_burst(limiter: RateLimiter) -> None:
    """No N + 1 calls within any window: what GCRA and fixed windows would let through."""
    limits = [limit(calls=3, window_seconds=9)]
    for now in (0, 3, 6):
        await call(limiter, limits, now)
    for now in (7, 8, 8.75):
        await refused(limiter, limits, now)
    await call(limiter, limits, 9)
    assert (await refused(limiter, limits, 9)).retry_after == pytest.approx(3)


async def test_refused_calls_do_not_count(limiter: RateLimiter) -> None:
    limits = [limit(calls=1, window_seconds=10)]
    await call(limiter, limits, 0)
    for now in range(1, 10):
        await refused(limiter, limits, now)

    await call(limiter, limits, 10)


async def test_without_now_the_backend_clock_is_used(limiter: RateLimiter) -> None:
    limits = [limit(calls=1, window_seconds=60)]
    await limiter.acquire(agent_id=1, tool="t", limits=limits)

    with pytest.raises(RateLimited) as info:
        await limiter.acquire(agent_id=1, tool="t", limits=limits)

    assert 50 < info.value.retry_after <= 60


# --- scopes and filters ----------------------------------------------------------------------


async def test_agent_scope_counts_each_agent_apart(limiter: RateLimiter) -> None:
    limits = [limit(scope="agent", calls=1, window_seconds=10)]
    await call(limiter, limits, 0, agent_id=1)
    await refused(limiter, limits, 1, agent_id=1)

    await call(limiter, limits, 1, agent_id=2)
    await refused(limiter, limits, 1, agent_id=2)


async def test_tool_scope_counts_each_tool_for_all_agents(limiter: RateLimiter) -> None:
    limits = [limit(scope="tool", calls=1, window_seconds=10)]
    await call(limiter, limits, 0, agent_id=1, tool="git__commit")

    await refused(limiter, limits, 1, agent_id=2, tool="git__commit")
    await call(limiter, limits, 1, agent_id=1, tool="git__push")


async def test_agent_tool_scope_counts_each_pair_apart(limiter: RateLimiter) -> None:
    limits = [limit(scope="agent_tool", calls=1, window_seconds=10)]
    await call(limiter, limits, 0, agent_id=1, tool="git__commit")

    await refused(limiter, limits, 1, agent_id=1, tool="git__commit")
    await call(limiter, limits, 1, agent_id=2, tool="git__commit")
    await call(limiter, limits, 1, agent_id=1, tool="git__push")


async def test_tenant_scope_counts_all_agents(limiter: RateLimiter) -> None:
    limits = [limit(scope="tenant", calls=3, window_seconds=10)]
    await call(limiter, limits, 0, agent_id=1, tool="a")
    await call(limiter, limits, 1, agent_id=2, tool="b")
    await call(limiter, limits, 2, agent_id=3, tool="c")

    exc = await refused(limiter, limits, 3, agent_id=4, tool="d")

    assert exc.retry_after == pytest.approx(7)
    assert "for the tenant" in exc.reason


async def test_tool_glob_narrows_which_calls_count(limiter: RateLimiter) -> None:
    limits = [limit(scope="tenant", tool="git__*", calls=1, window_seconds=10)]
    await call(limiter, limits, 0, tool="git__commit")
    for _ in range(5):
        await call(limiter, limits, 1, tool="files__read")

    await refused(limiter, limits, 1, tool="git__push")


async def test_agent_filter_narrows_which_calls_count(limiter: RateLimiter) -> None:
    limits = [limit(scope="tenant", agent_id=1, calls=1, window_seconds=10)]
    await call(limiter, limits, 0, agent_id=1)
    for _ in range(5):
        await call(limiter, limits, 1, agent_id=2)

    await refused(limiter, limits, 1, agent_id=1)


async def test_no_matching_limit_gives_the_shared_no_op_lease(limiter: RateLimiter) -> None:
    glob = [limit(tool="files__*", calls=1, window_seconds=10, concurrent=1)]

    first = await limiter.acquire(agent_id=1, tool="git__commit", limits=glob)
    second = await limiter.acquire(agent_id=1, tool="git__commit", limits=[])

    assert first is second
    await first.release()


async def test_no_matching_limit_needs_no_redis() -> None:
    limiter = RateLimiter(redis_url=f"redis://127.0.0.1:{_free_port()}/0")
    try:
        lease = await limiter.acquire(agent_id=1, tool="git__commit", limits=[])
        await lease.release()
    finally:
        await limiter.close()


# --- calls at once ---------------------------------------------------------------------------


async def test_concurrency_limit_frees_a_slot_on_release(limiter: RateLimiter) -> None:
    limits = [limit(concurrent=2)]
    first = await call(limiter, limits, 0)
    await call(limiter, limits, 0)

    exc = await refused(limiter, limits, 1)
    assert exc.retry_after == CONCURRENCY_RETRY_AFTER
    assert exc.reason == "rate limit: 2 at once per agent; retry after 1.0 s"

    await first.release()
    await call(limiter, limits, 2)
    await refused(limiter, limits, 2)


async def test_release_is_idempotent(limiter: RateLimiter) -> None:
    limits = [limit(concurrent=1)]
    first = await call(limiter, limits, 0)
    await first.release()
    await first.release()

    await call(limiter, limits, 1)
    await first.release()  # must not free the slot the second call holds

    await refused(limiter, limits, 2)


async def test_window_and_concurrency_in_one_limit(limiter: RateLimiter) -> None:
    limits = [limit(calls=2, window_seconds=10, concurrent=1)]
    lease = await call(limiter, limits, 0)
    assert (await refused(limiter, limits, 1)).retry_after == CONCURRENCY_RETRY_AFTER
    await lease.release()

    await (await call(limiter, limits, 2)).release()

    assert (await refused(limiter, limits, 3)).retry_after == pytest.approx(7)


async def test_a_lease_nobody_releases_expires(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter(lease_seconds=30)
    limits = [limit(concurrent=1)]
    await call(limiter, limits, 0)  # never released

    await refused(limiter, limits, 29)
    await call(limiter, limits, 30)


# --- all or nothing --------------------------------------------------------------------------


async def test_a_refusal_counts_the_call_in_no_other_limit(limiter: RateLimiter) -> None:
    per_agent = limit(1, scope="agent", calls=1, window_seconds=10)
    tenant = limit(2, scope="tenant", calls=2, window_seconds=10)
    at_once = limit(3, scope="tenant", concurrent=1)
    limits = [tenant, at_once, per_agent]
    await (await call(limiter, limits, 0, agent_id=1)).release()

    exc = await refused(limiter, limits, 1, agent_id=1)
    assert exc.limit == per_agent

    # Had the refused call been counted in the tenant limits, these would be refused.
    lease = await call(limiter, limits, 2, agent_id=2)
    assert (await refused(limiter, limits, 3, agent_id=3)).limit == tenant
    await lease.release()


async def test_refusal_names_the_limit_with_the_longest_retry_after(limiter: RateLimiter) -> None:
    short = limit(1, calls=1, window_seconds=10)
    long = limit(2, calls=1, window_seconds=100)
    at_once = limit(3, concurrent=1)
    limits = [short, long, at_once]
    await call(limiter, limits, 0)

    exc = await refused(limiter, limits, 5)

    assert exc.limit == long
    assert exc.retry_after == pytest.approx(95)


# --- Redis: many processes, one set of counters ----------------------------------------------


async def test_two_limiters_on_one_redis_share_counters(redis_limiters: MakeLimiter) -> None:
    one, two = redis_limiters(), redis_limiters()
    window = [limit(1, scope="tenant", calls=2, window_seconds=10)]
    at_once = [limit(2, scope="tenant", concurrent=1)]

    await call(one, window, 0, agent_id=1)
    await call(two, window, 1, agent_id=2)
    assert (await refused(one, window, 2, agent_id=3)).retry_after == pytest.approx(8)

    lease = await call(one, at_once, 0)
    await refused(two, at_once, 1)
    await lease.release()
    await call(two, at_once, 2)


async def test_leases_of_a_crashed_holder_expire(redis_limiters: MakeLimiter) -> None:
    crashed = redis_limiters(lease_seconds=60)
    await call(crashed, [limit(concurrent=1)], 0)
    await crashed.close()  # gone without releasing

    survivor = redis_limiters(lease_seconds=60)
    await refused(survivor, [limit(concurrent=1)], 59)
    await call(survivor, [limit(concurrent=1)], 60)


async def test_redis_counters_carry_a_ttl(redis_limiters: MakeLimiter, redis_server: str) -> None:
    limiter = redis_limiters(lease_seconds=30)
    spec = limit(calls=5, window_seconds=10, concurrent=2)
    await call(limiter, [spec], 0)

    with redis.Redis.from_url(redis_server) as client:
        key = spec.key(1, "git__commit")
        assert 0 < client.pttl(f"{key}:w") <= 10_000
        assert 0 < client.pttl(f"{key}:c") <= 30_000


async def test_redis_down_raises_unavailable_without_hanging() -> None:
    limiter = RateLimiter(redis_url=f"redis://:secret@127.0.0.1:{_free_port()}/0")
    try:
        with pytest.raises(RateLimitUnavailable) as info:
            await asyncio.wait_for(
                limiter.acquire(agent_id=1, tool="t", limits=[limit(calls=1, window_seconds=1)]),
                timeout=2,
            )
    finally:
        await limiter.close()
    assert "127.0.0.1" in str(info.value)
    assert "secret" not in str(info.value)


async def test_redis_that_never_answers_raises_unavailable_without_hanging() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RateLimiter(redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(RateLimitUnavailable, match="Timeout"):
            await asyncio.wait_for(
                limiter.acquire(agent_id=1, tool="t", limits=[limit(concurrent=1)]), timeout=2
            )
    finally:
        await limiter.close()
        server.close()
        await server.wait_closed()


async def test_a_dropped_redis_connection_is_replaced(
    redis_limiters: MakeLimiter, redis_server: str
) -> None:
    limiter = redis_limiters()
    limits = [limit(calls=2, window_seconds=10)]
    await call(limiter, limits, 0)
    with redis.Redis.from_url(redis_server) as client:
        client.client_kill_filter(_type="normal", skipme=True)  # as a Redis restart would

    await call(limiter, limits, 1)
    await refused(limiter, limits, 2)


# --- in-process memory -----------------------------------------------------------------------


async def test_in_process_counters_of_idle_keys_are_dropped() -> None:
    limiter = RateLimiter()
    limits = [limit(calls=1_000_000, window_seconds=10, concurrent=1_000_000)]
    for agent_id in range(3000):
        await (await call(limiter, limits, 0, agent_id=agent_id)).release()
    for _ in range(5000):
        await (await call(limiter, limits, 20, agent_id=0)).release()

    store = limiter._local
    assert len(store.logs) < 10
    assert len(store.leases) < 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
