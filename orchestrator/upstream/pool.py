"""One persistent MCP session per upstream tool server per gateway process.

Each ``Upstream`` owns a task that enters the SDK ``Client`` (anyio needs enter and exit in one
task), keeps it while it lives, and reconnects with exponential backoff when it dies. Calls
from any number of agents are multiplexed over that one session.

Each upstream has a circuit breaker (``Breaker``). A call fails when it times out or finds the
upstream down (the session closed under it, or the latest reconnect failed: such a call fails
at once instead of waiting out its deadline). After ``breaker_failures`` failed calls in a row
the breaker opens: calls fail at once (``UpstreamCircuitOpen``, an ``UpstreamDown``) without
touching the upstream, so a hung server costs agents nothing more than the calls that found
out. After ``breaker_reset_seconds`` exactly one trial call goes through; its success closes
the breaker, its failure opens it again. An answer of any kind (a result, isError, a JSON-RPC
error) closes it. When timeouts open it the session is probably wedged: it is dropped, so the
upstream is reconnected (a stdio server process is stopped and started again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import httpx2
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from governance.engine.types import ServerSpec

logger = logging.getLogger(__name__)

CatalogCallback = Callable[[ServerSpec, list[dict[str, Any]]], Awaitable[None]]


class UpstreamError(Exception):
    """A call that did not reach a result; ``outcome`` names it for the audit record."""

    outcome = "upstream_down"


class UpstreamDown(UpstreamError):
    outcome = "upstream_down"


class UpstreamCircuitOpen(UpstreamDown):
    """Refused at once: the upstream's breaker is open."""


class UpstreamTimeout(UpstreamError):
    outcome = "timeout"


class UpstreamRpcError(UpstreamError):
    """The upstream answered the call with a JSON-RPC error."""

    outcome = "upstream_error"

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def _transport(spec: ServerSpec) -> Any:
    if spec.transport == "stdio":
        # The SDK passes only a safe subset of our environment; keep PATH and the venv usable.
        env = {"PATH": os.environ.get("PATH", ""), **dict(spec.env)}
        return StdioServerParameters(command=spec.command, args=list(spec.args), env=env)
    return streamable_http_client(
        spec.url, http_client=httpx2.AsyncClient(headers=dict(spec.headers), timeout=30.0)
    )


async def upstream_list_tools(client: Client) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1000):  # a paginator that never ends cannot hang us
        page = await client.list_tools(cursor=cursor, cache_mode="refresh")
        tools.extend(
            t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in page.tools
        )
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


async def discover_tools(spec: ServerSpec, *, deadline: float) -> list[dict[str, Any]]:
    """Connect once and list the server's tools (used when a server is added)."""
    async with asyncio.timeout(deadline), Client(_transport(spec), cache=None) as client:
        return await upstream_list_tools(client)


Admission = Literal["call", "trial"]


class Breaker:
    """Closed: calls go. Open, after ``failures`` failed calls in a row: calls are refused.
    Half-open, ``reset_seconds`` after it opened: one trial call goes, the others are still
    refused; the trial's success closes the breaker, its failure opens it again. Any success
    closes it (the upstream answers); a call that ends without a verdict (cancelled) counts
    for nothing, and if it was the trial, the next call becomes the trial."""

    def __init__(
        self,
        *,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self._clock = clock
        self.in_a_row = 0  # failed calls since the last success
        self._opened_at: float | None = None
        self._trial = False  # the trial call is under way

    @property
    def state(self) -> Literal["closed", "open", "half_open"]:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._trial or self.retry_in() == 0 else "open"

    def retry_in(self) -> float:
        """Seconds until a trial call may go (0 when it may go now, or is under way)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_seconds - self._clock())

    def admit(self) -> Admission | None:
        """Let a call go, as an ordinary call or as the trial, or refuse it (None)."""
        if self._opened_at is None:
            return "call"
        if self._trial or self.retry_in() > 0:
            return None
        self._trial = True
        return "trial"

    def settle(
        self, admission: Admission, *, ok: bool | None
    ) -> Literal["opened", "closed"] | None:
        """How an admitted call ended: ``ok`` if the upstream answered, False if the call timed
        out or found it down, None if it ended otherwise. Returns the change it made."""
        if admission == "trial":
            self._trial = False
        if ok is None:
            return None
        if ok:
            was_open = self._opened_at is not None
            self.in_a_row, self._opened_at = 0, None
            return "closed" if was_open else None
        self.in_a_row += 1
        if admission == "trial" or (self._opened_at is None and self.in_a_row >= self.failures):
            self._opened_at = self._clock()
            return "opened"
        return None


class Upstream:
    def __init__(
        self,
        spec: ServerSpec,
        *,
        on_catalog: CatalogCallback,
        backoff_initial: float,
        backoff_max: float,
        watch_seconds: float,
        breaker: Breaker,
    ) -> None:
        self.spec = spec
        self.breaker = breaker
        self._watch_seconds = watch_seconds
        self._on_catalog = on_catalog
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._client: Client | None = None
        self._ready = asyncio.Event()
        self._dead = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error = ""
        self.failing = False  # the latest connection attempt failed: calls find it down at once
        self.connects = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"upstream-{self.spec.name}"
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, deadline: float
    ) -> dict[str, Any]:
        """The upstream's CallToolResult as a JSON dict, or an UpstreamError; through the
        breaker, which refuses the call at once while it is open."""
        breaker = self.breaker
        admission = breaker.admit()
        if admission is None:
            retry_in = breaker.retry_in()
            until = f"in {math.ceil(retry_in * 10) / 10:.1f} s" if retry_in else "now under way"
            raise UpstreamCircuitOpen(
                f"upstream {self.spec.name!r} is failing ({breaker.in_a_row} calls in a row "
                f"timed out or found it down); calls fail fast until a trial call {until} "
                "succeeds"
            )
        try:
            result = await self._call(name, arguments, deadline=deadline)
        except UpstreamError as exc:
            if breaker.settle(admission, ok=isinstance(exc, UpstreamRpcError)) == "opened":
                logger.warning(
                    "upstream %s: breaker open after %d failed calls in a row (%s); trial in %g s",
                    self.spec.name,
                    breaker.in_a_row,
                    exc,
                    breaker.reset_seconds,
                )
                if isinstance(exc, UpstreamTimeout):
                    self._dead.set()  # a wedged session: reconnect
            raise
        except BaseException:
            breaker.settle(admission, ok=None)
            raise
        if breaker.settle(admission, ok=True) == "closed":
            logger.info("upstream %s: breaker closed", self.spec.name)
        return result

    async def _call(
        self, name: str, arguments: dict[str, Any], *, deadline: float
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(deadline):
                client = await self._connected()
                try:
                    result = await client.session.call_tool(name, arguments)
                except MCPError as exc:
                    if exc.code == CONNECTION_CLOSED:
                        self._dead.set()
                        raise UpstreamDown(f"upstream {self.spec.name!r} disconnected") from None
                    raise UpstreamRpcError(exc.code, exc.error.message, exc.error.data) from None
        except TimeoutError:
            raise UpstreamTimeout(
                f"upstream {self.spec.name!r} did not answer within {deadline:g} s"
            ) from None
        return result.model_dump(by_alias=True, exclude_none=True, mode="json")

    async def _connected(self) -> Client:
        if self._client is None and self.failing:
            raise UpstreamDown(f"upstream {self.spec.name!r} is down: {self.last_error}")
        await self._ready.wait()
        assert self._client is not None
        return self._client

    async def _run(self) -> None:
        delay = self._backoff_initial
        while True:
            try:
                async with Client(_transport(self.spec), cache=None) as client:
                    tools = await upstream_list_tools(client)
                    await self._on_catalog(self.spec, tools)
                    self._client, self.failing, self.last_error = client, False, ""
                    self.connects += 1
                    self._dead.clear()
                    self._ready.set()
                    delay = self._backoff_initial
                    logger.info(
                        "upstream %s connected (%s)", self.spec.name, client.protocol_version
                    )
                    await self._watch(client, tools)
                    # Closing can take a while (a stdio server's grace period, an HTTP DELETE
                    # to a hung server): no call waits on this session meanwhile.
                    self._client, self.last_error = None, "connection closed"
                    self._ready.clear()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self.last_error = describe_error(exc)
                self.failing = True
                logger.warning("upstream %s failed: %s", self.spec.name, self.last_error)
            finally:
                self._client = None
                self._ready.clear()
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.05), self._backoff_max)

    async def _watch(self, client: Client, listed: list[dict[str, Any]]) -> None:
        """Return when the session is dead: a call saw it close, or a re-listing failed.
        The re-listing (both eras have it; ping is gone in 2026-07-28) doubles as the watch
        for an upstream that changes its tools mid-session."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._watch_seconds):
                    await self._dead.wait()
                    return
            try:
                async with asyncio.timeout(self._watch_seconds):
                    tools = await upstream_list_tools(client)
            except MCPError as exc:
                if exc.code == CONNECTION_CLOSED:
                    return
                continue
            except TimeoutError:
                return
            if tools != listed:
                await self._on_catalog(self.spec, tools)
                listed = tools


def describe_error(exc: BaseException) -> str:
    """One line for a failure to reach an upstream; anyio wraps the cause in groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class UpstreamPool:
    """The process's upstreams by server id; a changed spec replaces the session."""

    def __init__(
        self,
        *,
        on_catalog: CatalogCallback,
        backoff_initial: float,
        backoff_max: float,
        watch_seconds: float,
        breaker_failures: int,
        breaker_reset_seconds: float,
    ) -> None:
        self._on_catalog = on_catalog
        self._backoff = (backoff_initial, backoff_max)
        self._watch_seconds = watch_seconds
        self._breaker = (breaker_failures, breaker_reset_seconds)
        self._upstreams: dict[int, Upstream] = {}

    def get(self, spec: ServerSpec) -> Upstream:
        upstream = self._upstreams.get(spec.id)
        if upstream is None or upstream.spec != spec:
            if upstream is not None:
                asyncio.get_running_loop().create_task(upstream.stop())
            upstream = Upstream(
                spec,
                on_catalog=self._on_catalog,
                backoff_initial=self._backoff[0],
                backoff_max=self._backoff[1],
                watch_seconds=self._watch_seconds,
                breaker=Breaker(failures=self._breaker[0], reset_seconds=self._breaker[1]),
            )
            upstream.start()
            self._upstreams[spec.id] = upstream
        return upstream

    def retire_missing(self, live_ids: set[int]) -> None:
        """Stop the sessions of servers that were removed or disabled."""
        for server_id in set(self._upstreams) - live_ids:
            asyncio.get_running_loop().create_task(self._upstreams.pop(server_id).stop())

    async def close(self) -> None:
        await asyncio.gather(*(u.stop() for u in self._upstreams.values()))
        self._upstreams.clear()
