"""Rate-limit and quota counters: calls per window and calls at once, per agent, tool or tenant.

``governance/engine/limits.py`` decides which limits count a call and under which key; this
module keeps the counters, in Redis when ``redis_url`` is set (shared by every gateway process)
and in this process otherwise.

Algorithm: calls per window is an **exact sliding log**. A limit of N calls per W seconds admits
a call at time ``now`` when fewer than N admitted calls lie in ``(now - W, now]``; each admitted
call is logged with its time and drops out W seconds later. We chose it over GCRA and fixed
windows because it is the only one of the three that keeps the promise the admin wrote ("at
most N calls in any W seconds"): GCRA lets N calls burst and then admits one every W/N seconds,
so N + 1 calls can land within W/N seconds; fixed windows allow 2N across a boundary. The exact
log also makes ``retry_after`` exact: when the log is full, the next call is admitted the moment
its oldest relevant entry leaves the window, i.e. ``entry + W - now``. The price is memory of
O(N) per counter (one deque entry or sorted-set member per call in the window), which is fine
for gateway-sized limits (thousands per window, not millions).

Calls at once are **leases**: each admitted call holds a lease id in every concurrency counter it
counts in until ``Lease.release()``. A lease also expires by itself ``lease_seconds`` after it
was taken, so the slots of a crashed process come back; ``lease_seconds`` must therefore exceed
the longest call (the gateway passes the call timeout plus a margin). A refusal for concurrency
cannot know when a slot frees, so its ``retry_after`` is a fixed hint, ``CONCURRENCY_RETRY_AFTER``
(1 s).

All or nothing: ``acquire`` first checks every matching limit, and counts the call in all of them
only if none refuses; a refused call counts nowhere. When several refuse, ``RateLimited`` names
the one with the longest ``retry_after``, since retrying earlier would be refused again.

Backends:

- In-process: a dict of deques (sliding logs) and a dict of lease dicts. ``acquire`` does not
  await, so it is atomic on the event loop. Purging is amortised O(1) per call: entries leave
  from the front of each deque, and a sweep over all counters (dropping idle ones, so memory
  stays bounded by the counters in use) runs after as many calls as there are counters.
- Redis: one round trip per ``acquire``: a Lua script (EVALSHA, re-loaded if the server lost
  it) checks and counts every matching limit atomically. A sliding log is a sorted set of call
  ids scored by time, with a TTL of the window; a concurrency counter is a sorted set of lease
  ids scored by expiry, with a TTL of ``lease_seconds``; ``release`` is one pipelined ZREM per
  counter. Keys are ``LimitSpec.key(...)`` plus ``:w`` (window) or ``:c`` (concurrency). All
  keys of one call are touched by one script, so use a single Redis (not Cluster).

Time: with Redis, the script reads the server's clock (``TIME``), so every gateway process
counts on one clock whatever the skew between hosts. In-process, the clock is
``time.monotonic()``. Either way a caller may pass ``now=`` (seconds, any origin, used
consistently), which tests do to stay deterministic.

Failures: if Redis cannot be reached or answers with an error, ``acquire`` raises
``RateLimitUnavailable`` (the gateway refuses the call: fail closed). Sockets time out after 1 s
to connect and 1 s per operation, and a timeout is not retried, so a hung Redis costs about 1 s
and a refused connection almost nothing. A connection error is retried once, at once, on a
fresh connection (a pooled connection may have died with a Redis restart).
``release`` never raises: if Redis is unreachable then, the lease expires by itself.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from governance.engine.limits import LimitSpec

logger = logging.getLogger(__name__)

CONCURRENCY_RETRY_AFTER = 1.0  # seconds: the hint given when too many calls are in flight
_MIN_RETRY_AFTER = 1e-6  # retry_after is always > 0, even after float rounding

__all__ = [
    "CONCURRENCY_RETRY_AFTER",
    "Lease",
    "RateLimitUnavailable",
    "RateLimited",
    "RateLimiter",
]


class RateLimited(Exception):
    """A limit refused the call. Nothing was counted anywhere."""

    def __init__(self, limit: LimitSpec, retry_after: float) -> None:
        self.limit = limit
        self.retry_after = max(retry_after, _MIN_RETRY_AFTER)
        shown = math.ceil(self.retry_after * 10) / 10  # never tell a client to come back early
        self.reason = f"rate limit: {limit.describe()}; retry after {shown:.1f} s"
        super().__init__(self.reason)


class RateLimitUnavailable(Exception):
    """The counters cannot be reached (Redis down or failing); the call cannot be checked."""


class Lease:
    """The concurrency slots a call holds. This base class holds none."""

    __slots__ = ()

    async def release(self) -> None:
        """Free the slots. Idempotent; never raises."""


_NO_LEASE = Lease()


# --- one counting decision, shared by both backends ------------------------------------------


class _Counter:
    """One counter a call counts in: a sliding log (``window`` > 0) or a concurrency set."""

    __slots__ = ("key", "limit", "max", "window")

    def __init__(self, limit: LimitSpec, key: str, maximum: int, window: float) -> None:
        self.limit = limit
        self.key = key
        self.max = maximum
        self.window = window


def _counters(agent_id: int, tool: str, limits: Sequence[LimitSpec]) -> list[_Counter]:
    found = []
    for spec in limits:
        if not spec.matches(agent_id, tool):
            continue
        key = spec.key(agent_id, tool)
        if spec.calls and spec.window_seconds:
            found.append(_Counter(spec, f"{key}:w", spec.calls, float(spec.window_seconds)))
        if spec.concurrent:
            found.append(_Counter(spec, f"{key}:c", spec.concurrent, 0.0))
    return found


def _refuse(refusals: list[tuple[_Counter, float]]) -> RateLimited:
    counter, retry_after = max(refusals, key=lambda r: r[1])
    return RateLimited(counter.limit, retry_after)


# --- in-process backend ----------------------------------------------------------------------


class _LocalLease(Lease):
    __slots__ = ("_keys", "_lease_id", "_store")

    def __init__(self, store: _LocalStore, lease_id: int, keys: list[str]) -> None:
        self._store = store
        self._lease_id = lease_id
        self._keys = keys

    async def release(self) -> None:
        keys, self._keys = self._keys, []
        for key in keys:
            held = self._store.leases.get(key)
            if held is not None:
                held.pop(self._lease_id, None)
                if not held:
                    del self._store.leases[key]


class _LocalStore:
    def __init__(self, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self.logs: dict[str, tuple[float, deque[float]]] = {}  # key → (window, call times)
        self.leases: dict[str, dict[int, float]] = {}  # key → lease id → expiry, oldest first
        self._next_lease = 0
        self._calls_since_sweep = 0

    def acquire(self, counters: list[_Counter], now: float) -> Lease:
        refusals: list[tuple[_Counter, float]] = []
        for c in counters:
            if c.window:
                log = self._log(c, now)
                if len(log) >= c.max:
                    # The call is admitted once len(log) - max + 1 entries have left the window.
                    refusals.append((c, log[len(log) - c.max] + c.window - now))
            elif len(self._held(c.key, now)) >= c.max:
                refusals.append((c, CONCURRENCY_RETRY_AFTER))
        if refusals:
            raise _refuse(refusals)

        self._calls_since_sweep += 1
        if self._calls_since_sweep > max(1024, len(self.logs) + len(self.leases)):
            self._sweep(now)
        lease_keys = []
        self._next_lease += 1
        for c in counters:
            if c.window:
                self.logs.setdefault(c.key, (c.window, deque()))[1].append(now)
            else:
                self.leases.setdefault(c.key, {})[self._next_lease] = now + self.lease_seconds
                lease_keys.append(c.key)
        return _LocalLease(self, self._next_lease, lease_keys) if lease_keys else _NO_LEASE

    def _log(self, c: _Counter, now: float) -> deque[float]:
        entry = self.logs.get(c.key)
        if entry is None:
            return deque()
        log = entry[1]
        cutoff = now - c.window
        while log and log[0] <= cutoff:
            log.popleft()
        return log

    def _held(self, key: str, now: float) -> dict[int, float]:
        held = self.leases.get(key)
        if held is None:
            return {}
        while held:  # leases are taken in time order, so the oldest expire first
            lease_id, expiry = next(iter(held.items()))
            if expiry > now:
                break
            del held[lease_id]
        return held

    def _sweep(self, now: float) -> None:
        """Drop idle counters, so memory is bounded by the counters in use."""
        self._calls_since_sweep = 0
        self.logs = {
            key: (window, log)
            for key, (window, log) in self.logs.items()
            if log and log[-1] > now - window
        }
        self.leases = {
            key: held for key, held in self.leases.items() if any(e > now for e in held.values())
        }


# --- Redis backend ---------------------------------------------------------------------------

# KEYS: the counters. ARGV: now ("" = server clock), call id, lease seconds, then per key its
# maximum and its window (0 = a concurrency counter). Returns {} when the call is counted, else
# {index, retry_after, ...} for each refusing key (1-based; retry_after "-1" = concurrency).
_ACQUIRE = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local id = ARGV[2]
local lease = tonumber(ARGV[3])
local refused = {}
for i, key in ipairs(KEYS) do
  local max = tonumber(ARGV[2 + 2 * i])
  local window = tonumber(ARGV[3 + 2 * i])
  if window > 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    local n = redis.call('ZCARD', key)
    if n >= max then
      local oldest = redis.call('ZRANGE', key, n - max, n - max, 'WITHSCORES')
      refused[#refused + 1] = i
      refused[#refused + 1] = string.format('%.17g', tonumber(oldest[2]) + window - now)
    end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= max then
      refused[#refused + 1] = i
      refused[#refused + 1] = '-1'
    end
  end
end
if #refused > 0 then
  return refused
end
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[3 + 2 * i])
  if window > 0 then
    redis.call('ZADD', key, now, id)
    redis.call('PEXPIRE', key, math.ceil(window * 1000))
  else
    redis.call('ZADD', key, now + lease, id)
    redis.call('PEXPIRE', key, math.ceil(lease * 1000))
  end
end
return {}
"""


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


class _RedisLease(Lease):
    __slots__ = ("_client", "_keys", "_lease_id")

    def __init__(self, client: aioredis.Redis, lease_id: str, keys: list[str]) -> None:
        self._client = client
        self._lease_id = lease_id
        self._keys = keys

    async def release(self) -> None:
        keys, self._keys = self._keys, []
        if not keys:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zrem(key, self._lease_id)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            logger.warning(
                "could not release rate-limit lease %s; it expires by itself",
                self._lease_id,
                exc_info=True,
            )


class _RedisStore:
    def __init__(self, url: str, lease_seconds: float) -> None:
        self.url = url
        self.lease_seconds = lease_seconds
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            # One immediate retry on a fresh connection when the pooled one died (a Redis
            # restart); none on timeouts, so a hung Redis costs 1 s, not 2.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self.script = self.client.register_script(_ACQUIRE)

    async def acquire(self, counters: list[_Counter], now: float | None) -> Lease:
        lease_id = uuid.uuid4().hex
        args: list[Any] = ["" if now is None else repr(float(now)), lease_id, self.lease_seconds]
        for c in counters:
            args += [c.max, c.window]
        try:
            refused = await self.script(keys=[c.key for c in counters], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise RateLimitUnavailable(
                f"rate limits unavailable: Redis at {_redacted(self.url)} failed: {exc}"
            ) from exc
        if refused:
            raise _refuse(
                [
                    (counters[int(i) - 1], float(r) if float(r) >= 0 else CONCURRENCY_RETRY_AFTER)
                    for i, r in zip(refused[::2], refused[1::2], strict=True)
                ]
            )
        keys = [c.key for c in counters if not c.window]
        return _RedisLease(self.client, lease_id, keys) if keys else _NO_LEASE

    async def close(self) -> None:
        await self.client.aclose()


# --- the interface the gateway uses ----------------------------------------------------------


class RateLimiter:
    """Counts governed calls against the tenant's rate limits (see the module docstring)."""

    def __init__(self, *, redis_url: str = "", lease_seconds: float = 300.0) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self._redis = _RedisStore(redis_url, lease_seconds) if redis_url else None
        self._local = _LocalStore(lease_seconds)

    @property
    def backend(self) -> str:
        return "redis" if self._redis else "memory"

    async def acquire(
        self,
        *,
        agent_id: int,
        tool: str,
        limits: Sequence[LimitSpec],
        now: float | None = None,
    ) -> Lease:
        """Count one call in every matching limit, or raise ``RateLimited`` counting nothing.

        The returned lease must be released when the call ends (it frees concurrency slots).
        Raises ``RateLimitUnavailable`` when Redis cannot be reached.
        """
        if not limits:
            return _NO_LEASE
        counters = _counters(agent_id, tool, limits)
        if not counters:
            return _NO_LEASE
        if self._redis is not None:
            return await self._redis.acquire(counters, now)
        return self._local.acquire(counters, time.monotonic() if now is None else now)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.close()
