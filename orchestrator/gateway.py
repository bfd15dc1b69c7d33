"""The gateway runtime of one process: what every connection of that process shares.

- an in-memory snapshot of governance state per tenant (tokens, agents, tools, policy), so
  the hot path never touches the ORM; re-read when the tenant's persisted version changes;
- the upstream pool (one MCP session per tool server);
- the audit writer (group commit);
- the calls it holds for approval (``orchestrator.approvals``);
- ``call_tool``: the governed call — decide, record intent, (hold for approval,) call,
  record outcome, reply;
- its calls in flight: a heartbeat tells the others how old the oldest is (so the calls of
  a process that dies can be recovered), and ``drain`` lets them finish before a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from audit.models import AuditRecord
from audit.writer import AuditWriter
from governance import selectors
from governance.engine.guardrails.base import Action, Context, Finding, Outcome, Stage
from governance.engine.guardrails.pipeline import GuardrailSpec, Inspection, Pipeline, Verdict
from governance.engine.policy import AgentPolicy, Decision, Effect
from governance.engine.types import ServerSpec, TenantState, ToolEntry
from governance.models import Agent, ApprovalRequest
from governance.services.agents import token_digest
from governance.services.approvals import ApprovalError, approval_request_create, arguments_digest
from governance.services.nodes import node_beat, node_leave, node_start, nodes_recover
from governance.services.slowchecks import SlowVerdict, slow_checks_submit, slow_checks_verdicts
from governance.services.toolservers import tool_catalog_sync
from governance.services.versions import GOVERNANCE_GROUP
from orchestrator.approvals import Approvals, Progress
from orchestrator.ratelimit import RateLimited, RateLimiter, RateLimitUnavailable
from orchestrator.upstream.pool import UpstreamError, UpstreamPool, UpstreamRpcError

logger = logging.getLogger(__name__)

# The nudge listener re-joins its group this often (membership expires, and a Redis restart
# forgets it) and, after a failure, retries after 1 s, doubling up to this.
_GROUP_REJOIN_SECONDS = 30.0
# A drain gives stragglers this long to record their outcome, and clients as long to answer
# the close frames; then a moment for the last answers of HTTP requests to go out.
_CLOSE_SECONDS = 2.0
_ANSWER_SECONDS = 0.1

PERMISSION_DENIED = -32001
APPROVAL_REQUIRED = -32002
UPSTREAM_UNAVAILABLE = -32003
UPSTREAM_TIMEOUT = -32004
TOOL_QUARANTINED = -32005
GUARDRAIL_BLOCKED = -32006
RATE_LIMITED_CODE = -32007
GATEWAY_DRAINING = -32008
DRAINING = (
    "this gateway is restarting and takes no new calls; nothing was called: call again on a "
    "new connection"
)
CALL_INTERRUPTED = -32009
INTERRUPTED = (
    "the gateway restarted before the call finished; the upstream may or may not have run "
    "it: check before calling again"
)
CLOSE_RESTARTING = 1012  # WebSocket "service restart": reconnect, to another node if need be
UNKNOWN_TOOL = -32602  # what the MCP spec prescribes for an unknown tool name


class AuthError(Exception):
    """A token that may not be used; the message says why."""


@dataclass(frozen=True, slots=True)
class AgentContext:
    """Who is calling, resolved once per connection (WebSocket) or request (HTTP)."""

    tenant_id: int
    tenant_slug: str
    agent_id: int
    agent_name: str
    token_digest: str


@dataclass(frozen=True, slots=True)
class CallMeta:
    """How the call arrived: recorded in the audit trail."""

    transport: str  # ws | http
    protocol_version: str
    request_id: str
    # Set when the client asked for progress (params._meta.progressToken): a held call tells
    # it how the wait goes.
    progress: Progress | None = field(default=None, compare=False)

    @property
    def protocol_era(self) -> str:
        return "stateless" if self.protocol_version in MODERN_PROTOCOL_VERSIONS else "handshake"


class CallError(Exception):
    """A governed call that ends in a JSON-RPC error rather than a tool result."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def _digest(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class Gateway:
    def __init__(self) -> None:
        self._states: dict[int, TenantState] = {}
        self._tokens: dict[str, int] = {}  # token digest → tenant id
        self._listeners: dict[int, set[Callable[[], None]]] = {}
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-state")
        self._poller: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._refreshing = asyncio.Lock()
        self.page_size = settings.MCP_PAGE_SIZE
        self.audit = AuditWriter(batch_max=settings.AUDIT_BATCH_MAX)
        self.limiter = RateLimiter(
            # Outlasts the longest call: its timeout plus two blocking slow checks (60 s each).
            redis_url=settings.REDIS_URL,
            lease_seconds=settings.MCP_CALL_TIMEOUT_SECONDS + 180,
        )
        self.upstreams = UpstreamPool(
            on_catalog=self._catalog_seen,
            backoff_initial=settings.UPSTREAM_BACKOFF_INITIAL,
            backoff_max=settings.UPSTREAM_BACKOFF_MAX,
            watch_seconds=settings.UPSTREAM_WATCH_SECONDS,
            breaker_failures=settings.UPSTREAM_BREAKER_FAILURES,
            breaker_reset_seconds=settings.UPSTREAM_BREAKER_RESET_SECONDS,
        )
        self.node = settings.GATEWAY_NODE or f"{socket.gethostname()}:{os.getpid()}"
        self.boot = uuid.uuid4()  # this process's run of the node
        self.approvals = Approvals(self._in_db, node=self.node)
        # Calls not answered yet: when each began, and its task (a drain cancels stragglers).
        self._calls: dict[uuid.UUID, tuple[datetime, asyncio.Task[Any] | None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._beaten = 0.0
        self.draining = False
        self._restarts: set[Callable[[], Awaitable[None]]] = set()  # open WebSockets' close
        # Presence: connections per agent on this process; agents seen since the last round
        # of last_seen_at writes, and when that was (monotonic); agents never written yet by
        # this process (written at the next poll), and those that were.
        self._connected: dict[int, int] = {}
        self._seen: set[int] = set()
        self._presence_written = 0.0
        self._unwritten: set[int] = set()
        self._written: set[int] = set()

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self._in_db(node_start, id=self.boot, name=self.node)
        recovered = await self._in_db(nodes_recover, lease_seconds=settings.NODE_LEASE_SECONDS)
        if recovered:
            logger.warning("recorded %d call(s) left by a dead gateway as interrupted", recovered)
        await self.refresh()
        await self.approvals.start()
        loop = asyncio.get_running_loop()
        self._poller = loop.create_task(self._poll(), name="governance-poll")
        self._listener = loop.create_task(self._listen(), name="governance-nudge")

    async def drain(self, *, seconds: float) -> None:
        """Before a restart: take no new calls; let those in flight finish, up to ``seconds``
        (held calls are interrupted at once: a reviewer may take minutes); cancel the rest
        (recorded interrupted); then close every WebSocket with 1012 once its answers are out.
        """
        self.draining = True
        await self.approvals.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        late = [task for _, task in self._calls.values() if task is not None]
        for task in late:
            task.cancel()
        if late:
            logger.warning("drain: %d call(s) still running were interrupted", len(late))
            await asyncio.wait(late, timeout=_CLOSE_SECONDS)
        # Each returns once its client answered the close frame (or gave up on it).
        restarts = [asyncio.ensure_future(restart()) for restart in list(self._restarts)]
        if restarts:
            await asyncio.wait(restarts, timeout=_CLOSE_SECONDS)
        await asyncio.sleep(_ANSWER_SECONDS)  # the last HTTP answers go out

    async def close(self) -> None:
        await self.approvals.stop()  # held calls answer with a clear error first
        for task in (self._poller, self._listener):
            if task is not None:
                task.cancel()
        await self.audit.close()
        await self.upstreams.close()
        await self.limiter.close()
        if not self._calls:  # every call has its outcome: nothing for a recovery to find
            with contextlib.suppress(Exception):
                await self._in_db(node_leave, id=self.boot)

    async def _in_db(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        def run() -> Any:
            try:
                return fn(**kwargs)
            except Exception:
                close_old_connections()
                raise

        # sync_to_async on our own single thread: DB work stays serialised, and async_to_sync
        # inside it (the governance nudge after a commit) runs on this loop.
        return await sync_to_async(run, thread_sensitive=False, executor=self._db)()

    async def _poll(self) -> None:
        last = time.time()
        while True:
            await asyncio.sleep(settings.GOVERNANCE_POLL_SECONDS)
            try:
                await self.refresh()
            except Exception:
                logger.exception("governance refresh failed; keeping the last known state")
            try:
                await self.approvals.poll()
                await self._presence_write()
                await self._heartbeat()
            except Exception:
                logger.exception("approval, presence or heartbeat failed; the next poll retries")
            now = time.time()
            for tenant_id, state in list(self._states.items()):
                if state.policy.window_edge_between(last, now):
                    self._notify(tenant_id)  # a rule's window opened or closed
            last = now

    async def _listen(self) -> None:
        """Refresh at once when a change is announced on the channel layer. The poll above is
        the guarantee; this only shortens the wait when the nudge arrives."""
        layer = get_channel_layer()
        if layer is None:
            return
        channel, retry = "", 1.0
        while True:
            try:
                channel = channel or await layer.new_channel()
                await layer.group_add(GOVERNANCE_GROUP, channel)
                if retry > 1.0:  # back after a failure: catch up on the nudges it missed
                    await self.refresh()
                    await self.approvals.poll()
                retry = 1.0
                async with asyncio.timeout(_GROUP_REJOIN_SECONDS):
                    while True:
                        message = await layer.receive(channel)
                        try:
                            if message.get("type") == "approval.changed":
                                await self.approvals.poll()
                            else:
                                await self.refresh()
                        except Exception:
                            logger.exception("governance refresh failed; the poll retries it")
            except TimeoutError:
                continue
            except Exception as exc:
                logger.warning("governance nudges unavailable (%r); polling only for now", exc)
                await asyncio.sleep(retry)
                retry = min(retry * 2, _GROUP_REJOIN_SECONDS)

    async def refresh(self) -> None:
        """Reload every tenant whose persisted version moved, then tell its connections."""
        async with self._refreshing:  # the poll and a nudge may ask at once
            await self._refresh()

    async def _refresh(self) -> None:
        # One trip to the database thread: under load each trip waits its turn on the loop.
        versions, states = await self._in_db(
            selectors.tenant_states_changed,
            known={tid: state.version for tid, state in self._states.items()},
        )
        changed = list(states)
        removed = set(self._states) - set(versions)
        self._states.update(states)
        for tenant_id in removed:
            del self._states[tenant_id]
        if not changed and not removed:
            return
        self._tokens = {
            digest: state.id for state in self._states.values() for digest in state.tokens
        }
        self.upstreams.retire_missing({sid for s in self._states.values() for sid in s.servers})
        for tenant_id in changed:
            state = self._states[tenant_id]
            listed = {tool.server_id for tool in state.tools.values()}
            for spec in state.servers.values():
                if spec.id not in listed:
                    self.upstreams.get(spec)  # connecting lists its tools into the catalog
        for tenant_id in (*changed, *removed):
            self._notify(tenant_id)

    def _notify(self, tenant_id: int) -> None:
        for listener in list(self._listeners.get(tenant_id, ())):
            listener()

    # --- calls in flight ------------------------------------------------------------------
    @contextlib.contextmanager
    def _open(self, log: CallLog) -> Iterator[None]:
        """Around a call from its first record to its last: the heartbeat reports the oldest,
        and a drain waits for them."""
        self._calls[log.call_id] = (log.fields["started_at"], asyncio.current_task())
        self._idle.clear()
        try:
            yield
        finally:
            del self._calls[log.call_id]
            if not self._calls:
                self._idle.set()

    async def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self._beaten < settings.NODE_HEARTBEAT_SECONDS:
            return
        self._beaten = now
        # Taken before the write: a call that starts meanwhile starts after it.
        since = min((started for started, _ in self._calls.values()), default=timezone.now())
        await self._in_db(node_beat, id=self.boot, name=self.node, calls_since=since)

    def on_drain(self, restart: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """A WebSocket's way to be closed (1012) by the drain; returns its unregistration."""
        self._restarts.add(restart)
        return lambda: self._restarts.discard(restart)

    # --- presence --------------------------------------------------------------------------
    def connected(self, ctx: AgentContext, change: int) -> None:
        """A WebSocket of the agent opened (+1) or closed (-1) on this process."""
        count = self._connected.get(ctx.agent_id, 0) + change
        if count > 0:
            self._connected[ctx.agent_id] = count
        else:
            self._connected.pop(ctx.agent_id, None)
        self._saw(ctx.agent_id)

    def _saw(self, agent_id: int) -> None:
        self._seen.add(agent_id)
        if agent_id not in self._written:
            self._unwritten.add(agent_id)

    async def _presence_write(self) -> None:
        """Each poll: last_seen_at of the agents this process sees for the first time. Every
        AGENT_PRESENCE_SECONDS: that of every agent connected or seen since the last round.
        One UPDATE each time; a poll costs nothing per connected agent between rounds."""
        now = time.monotonic()
        if now - self._presence_written >= settings.AGENT_PRESENCE_SECONDS:
            self._presence_written = now
            due, self._seen = self._seen | self._connected.keys(), set()
        else:
            due = self._unwritten
        self._unwritten = set()
        if due:
            self._written |= due
            await self._in_db(_last_seen_write, agent_ids=sorted(due))

    # --- identity --------------------------------------------------------------------------
    def authenticate(self, token: str) -> AgentContext:
        digest = token_digest(token)
        tenant_id = self._tokens.get(digest)
        if tenant_id is None:
            raise AuthError("unknown token")
        state = self._states[tenant_id]
        entry = state.tokens[digest]
        ctx = AgentContext(
            tenant_id=tenant_id,
            tenant_slug=state.slug,
            agent_id=entry.agent_id,
            agent_name=state.agents[entry.agent_id].name,
            token_digest=digest,
        )
        self.check(ctx)
        self._saw(ctx.agent_id)
        return ctx

    def check(self, ctx: AgentContext, *, now: datetime | None = None) -> None:
        """Raise AuthError if the context's token or agent may no longer be used."""
        state = self._states.get(ctx.tenant_id)
        entry = state.tokens.get(ctx.token_digest) if state else None
        if state is None or entry is None:
            raise AuthError("token revoked")
        problem = entry.problem(now=now or timezone.now())
        if problem:
            raise AuthError(problem)
        agent = state.agents.get(entry.agent_id)
        if agent is None or not agent.is_active:
            raise AuthError("agent disabled")

    def subscribe(self, tenant_id: int, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` after each change of the tenant's governance state."""
        self._listeners.setdefault(tenant_id, set()).add(listener)
        return lambda: self._listeners.get(tenant_id, set()).discard(listener)

    # --- tools -------------------------------------------------------------------------------
    def visible_tools(self, ctx: AgentContext) -> list[ToolEntry]:
        """The tools the agent may call, in name order."""
        state = self._states[ctx.tenant_id]
        policy, now = state.policy.for_agent(ctx.agent_id), time.time()
        return [
            tool
            for tool in state.tools.values()
            if policy.visible("tool", tool.exposed_name, now=now)
        ]

    async def call_tool(
        self, ctx: AgentContext, meta: CallMeta, *, name: str, arguments: dict[str, Any]
    ) -> dict[str, Any]:
        """Govern and run one tools/call. Returns the CallToolResult, or raises CallError.

        Decide, count against rate limits, inspect the arguments, record the intent (durable
        before the upstream is called), run slow input checks, call, inspect the result,
        record the outcome (durable before this returns). A cancelled call still gets its
        outcome record. A draining gateway refuses the call before anything is recorded.
        """
        if self.draining:
            raise CallError(GATEWAY_DRAINING, DRAINING, {"tool": name, "retryAfterSeconds": 0})
        state = self._states[ctx.tenant_id]
        tool = state.tools.get(name)
        policy = state.policy.for_agent(ctx.agent_id)
        if tool is not None:
            decision = policy.decide("tool", name, arguments, now=time.time())
        elif name in state.quarantined:
            decision = Decision(Effect.DENY, f"tool quarantined: {state.quarantined[name]}")
        else:
            decision = Decision(Effect.DENY, "unknown tool")
        log = CallLog(ctx, meta, state, name, arguments, decision)
        with self._open(log):
            return await self._decided(state, name, tool, policy, log, arguments)

    async def _decided(
        self,
        state: TenantState,
        name: str,
        tool: ToolEntry | None,
        policy: AgentPolicy,
        log: CallLog,
        arguments: dict[str, Any],
    ) -> dict[str, Any]:
        ctx, decision = log.ctx, log.decision
        # Only names from the catalog are cached: an agent inventing names must not grow it.
        pipeline = state.guardrails.for_call(ctx.agent_id, name, cache=tool is not None)
        context = Context(Stage.INPUT, name, tool.input_schema if tool else None)

        if tool is None or decision.effect is Effect.DENY:
            log.arguments(pipeline.recorded(Stage.INPUT, arguments, context))
            await log.refused(self.audit, AuditRecord.Outcome.DENIED)
            if name in state.quarantined:
                raise CallError(
                    TOOL_QUARANTINED,
                    f"{decision.reason}; it stays hidden until an admin approves it",
                    {"tool": name, "reason": state.quarantined[name]},
                )
            if tool is None:
                raise CallError(UNKNOWN_TOOL, f"unknown tool: {name!r}")
            raise _refusal(state, policy, decision, name, arguments)
        # From here on the call is allowed, or held for approval once its input is checked.

        try:
            lease = await self.limiter.acquire(
                agent_id=ctx.agent_id, tool=name, limits=state.rate_limits
            )
        except (RateLimited, RateLimitUnavailable) as exc:
            limited = isinstance(exc, RateLimited)
            if not limited:
                logger.warning("rate limits unavailable, call refused: %s", exc)
            reason = exc.reason if limited else "rate limits cannot be checked right now"
            retry_after = round(exc.retry_after, 3) if limited else 1.0
            log.arguments(pipeline.recorded(Stage.INPUT, arguments, context))
            await log.refused(self.audit, AuditRecord.Outcome.RATE_LIMITED, error=reason)
            raise CallError(
                RATE_LIMITED_CODE,
                reason,
                {"tool": name, "retryAfterSeconds": retry_after}
                | ({"limit": exc.limit.id} if limited else {}),
            ) from None
        try:
            return await self._governed(state, tool, pipeline, log, arguments, context)
        finally:
            await asyncio.shield(lease.release())  # a cancel must not keep the slot

    async def _governed(
        self,
        state: TenantState,
        tool: ToolEntry,
        pipeline: Pipeline,
        log: CallLog,
        arguments: dict[str, Any],
        context: Context,
    ) -> dict[str, Any]:
        name, asked = tool.exposed_name, arguments
        inspection = pipeline.inspect(Stage.INPUT, arguments, context)
        log.inspected(inspection)
        log.arguments(inspection.recorded)  # the intent, with the input verdicts
        if inspection.blocked:
            await log.refused(self.audit, AuditRecord.Outcome.BLOCKED)
            raise _blocked(inspection.blocked, name)
        arguments = inspection.value
        try:
            # write() enqueues the record before it first yields: from here on the intent is
            # on its way to disk, and any exit below gets its outcome record after it.
            await self.audit.write(log.intent)
            self._still_allowed(state, log, asked)
            blocked = await self._slow_checks(pipeline, log, Stage.INPUT, arguments)
            if blocked:
                await self.audit.write(log.outcome(AuditRecord.Outcome.BLOCKED))
                raise _blocked(blocked, name)
            if log.decision.effect is Effect.REQUIRE_APPROVAL:
                await self._approved(state, log, arguments)
            self._still_allowed(state, log, asked)
            upstream = self.upstreams.get(state.servers[tool.server_id])
            result = await upstream.call_tool(
                tool.name, arguments, deadline=settings.MCP_CALL_TIMEOUT_SECONDS
            )
            result = _without_upstream_meta(result)
            inspection = pipeline.inspect(Stage.OUTPUT, result, Context(Stage.OUTPUT, name))
            log.inspected(inspection)
            blocked = inspection.blocked or await self._slow_checks(
                pipeline, log, Stage.OUTPUT, inspection.value
            )
        except PolicyChanged as changed:
            await self.audit.write(log.outcome(AuditRecord.Outcome.DENIED, error=changed.reason))
            raise changed.refusal from None
        except UpstreamError as exc:
            error = str(exc)
            if isinstance(exc, UpstreamRpcError):
                # The upstream's own words reach the agent, so they pass the output checks too.
                said = pipeline.inspect(
                    Stage.OUTPUT, exc.message[:2000], Context(Stage.OUTPUT, name)
                )
                log.inspected(said)
                exc.message = (
                    said.value
                    if said.blocked is None
                    else f"the upstream's error message was withheld: {said.blocked.summary()}"
                )
                error = said.recorded
            await self.audit.write(log.outcome(exc.outcome, error=error))
            raise _call_error(exc, tool) from None
        except asyncio.CancelledError:
            if not self.draining:  # the agent cancelled, or left: no answer is due
                outcome = log.outcome(AuditRecord.Outcome.CANCELLED)
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.audit.write(outcome))
                raise
            # The drain ran out of time for it: the agent is told, since its connection is
            # about to close as if every call had been answered.
            outcome = log.outcome(AuditRecord.Outcome.INTERRUPTED, error=INTERRUPTED)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.audit.write(outcome))
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            raise CallError(CALL_INTERRUPTED, INTERRUPTED, {"tool": name}) from None
        if blocked:
            # The digest of what was withheld proves what the upstream said, revealing nothing.
            await self.audit.write(log.outcome(AuditRecord.Outcome.BLOCKED, result=result))
            raise _blocked(blocked, name)
        result = inspection.value
        is_error = bool(result.get("isError"))
        await self.audit.write(
            log.outcome(
                AuditRecord.Outcome.TOOL_ERROR if is_error else AuditRecord.Outcome.OK,
                error=_error_text(inspection.recorded) if is_error else "",
                result=result,
            )
        )
        return result

    def _still_allowed(self, state: TenantState, log: CallLog, arguments: dict[str, Any]) -> None:
        """Raise PolicyChanged if a policy applied since the call was decided refuses it. The
        call waited (its intent's commit, slow checks, a reviewer): a rule that no longer
        stands must not send it upstream. Only a refusal counts: a call decided under a
        stricter rule is not let off by a looser one."""
        current = self._states.get(log.ctx.tenant_id)
        if current is None or current.version == state.version:
            return
        name = log.fields["tool"]
        policy = current.policy.for_agent(log.ctx.agent_id)
        if name in current.tools:
            decision = policy.decide("tool", name, arguments, now=time.time())
        else:
            decision = Decision(Effect.DENY, "the tool is no longer offered")
        if decision.effect is Effect.DENY:
            reason = f"policy changed while the call waited: {decision.reason}"
            raise PolicyChanged(reason, _refusal(current, policy, decision, name, arguments))

    async def _approved(self, state: TenantState, log: CallLog, arguments: dict[str, Any]) -> None:
        """Hold the call for a reviewer's decision, bound to these exact arguments. Returns
        once it is approved and the approval used; otherwise records the outcome and raises.
        The request and each step are recorded in the chain by whoever takes the step."""
        ctx, decision = log.ctx, log.decision
        try:
            approval: ApprovalRequest = await self._in_db(
                approval_request_create,
                tenant_id=ctx.tenant_id,
                agent_id=ctx.agent_id,
                agent_name=ctx.agent_name,
                call_id=log.call_id,
                tool=log.fields["tool"],
                arguments=arguments,
                recorded_arguments=log.fields["arguments"],
                rule_id=decision.rule_id,
                reason=decision.reason,
                policy_version=state.version,
                node=self.approvals.node,
                timeout_seconds=state.approval_timeout_seconds,
                lease_seconds=settings.APPROVAL_LEASE_SECONDS,
            )
        except Exception as exc:  # fail closed: no request, no call
            logger.exception("approval request of call %s could not be stored", log.call_id)
            error = "the approval request could not be stored; nothing was called"
            await self.audit.write(log.outcome(AuditRecord.Outcome.DENIED, error=error))
            raise CallError(APPROVAL_REQUIRED, error, {"tool": log.fields["tool"]}) from exc
        ended = await self.approvals.wait(approval, log.meta.progress)
        if ended.status == ApprovalRequest.Status.APPROVED:
            try:
                ended = await self.approvals.release(ended, arguments_digest(arguments))
            except ApprovalError as exc:
                refusal = _not_approved(state, ended, refused=str(exc))
            else:
                log.approved(ended)
                return
        else:
            refusal = _not_approved(state, ended)
        await self.audit.write(log.outcome(AuditRecord.Outcome.DENIED, error=refusal.message))
        raise refusal

    async def _slow_checks(
        self, pipeline: Pipeline, log: CallLog, stage: Stage, value: Any
    ) -> Verdict | None:
        """Send the stage's slow checks to Celery; wait for the blocking ones, each up to its
        timeout, and return the verdict that blocks the call, if one does."""
        specs = pipeline.slow[stage]
        if not specs:
            return None
        verdicts: list[Verdict] = []
        waiting: dict[int, tuple[GuardrailSpec, float]] = {}
        try:
            ids = await self._in_db(
                slow_checks_submit,
                tenant_id=log.ctx.tenant_id,
                call_id=log.call_id,
                stage=str(stage),
                specs=specs,
                payload=value,
            )
            loop = asyncio.get_running_loop()
            waiting = {
                check_id: (spec, loop.time() + spec.timeout_seconds)
                for spec, check_id in zip(specs, ids, strict=True)
                if spec.mode == "blocking"
            }
            while waiting:
                await asyncio.sleep(settings.SLOW_CHECK_POLL_SECONDS)
                found = await self._in_db(slow_checks_verdicts, ids=list(waiting))
                now = loop.time()
                for check_id, (spec, deadline) in list(waiting.items()):
                    verdict = found.get(check_id)
                    if verdict is not None or now >= deadline:
                        verdicts.append(_slow_verdict(spec, stage, verdict))
                        del waiting[check_id]
        except Exception as exc:  # the database or broker failed: each check's failure mode
            logger.exception("slow checks of call %s could not run", log.call_id)
            unanswered = [spec for spec, _ in waiting.values()] or [
                spec for spec in specs if spec.mode == "blocking"
            ]
            verdicts += [
                _slow_verdict(spec, stage, None, error=f"slow checks unavailable: {exc!r}"[:300])
                for spec in unanswered
            ]
        log.add(verdicts)
        return next((v for v in verdicts if v.outcome is Outcome.BLOCK), None)

    async def _catalog_seen(self, spec: ServerSpec, tools: list[dict[str, Any]]) -> None:
        """An upstream (re)connected and listed its tools: keep the stored catalog current."""
        changed = await self._in_db(tool_catalog_sync, server_id=spec.id, tools=tools)
        if changed:
            await self.refresh()


class CallLog:
    """The audit records of one call: the intent, then one outcome, sharing a call id. Every
    guardrail verdict is added as it is reached; the outcome carries them all."""

    def __init__(
        self,
        ctx: AgentContext,
        meta: CallMeta,
        state: TenantState,
        name: str,
        arguments: dict[str, Any],
        decision: Decision,
    ) -> None:
        self.ctx, self.call_id, self.t0 = ctx, uuid.uuid4(), time.perf_counter()
        self.meta, self.decision = meta, decision
        self.verdicts: list[dict[str, Any]] = []
        started_at = timezone.now()
        self.fields: dict[str, Any] = {
            "call_id": self.call_id,
            "tenant_id": ctx.tenant_id,
            "agent_id": ctx.agent_id,
            "agent_name": ctx.agent_name,
            "transport": meta.transport,
            "protocol_era": meta.protocol_era,
            "protocol_version": meta.protocol_version,
            "request_id": meta.request_id[:200],
            "tool": name[:300],
            "arguments": arguments,
            "decision": decision.effect,
            "reason": decision.reason[:500],
            "rule_id": decision.rule_id,
            "shadow": decision.shadow_record(),
            "policy_version": state.version,
            "started_at": started_at,
        }

    @property
    def intent(self) -> AuditRecord:
        """The intent as it stands: the arguments as recorded and the input verdicts so far.
        Built when written (a model instance per call is not free)."""
        return self._record(AuditRecord.Kind.INTENT, created_at=self.fields["started_at"])

    def _record(self, kind: str, **fields: Any) -> AuditRecord:
        return AuditRecord(
            **self.fields,
            kind=kind,
            guardrails=list(self.verdicts),
            flagged=any(v["verdict"] != "pass" for v in self.verdicts),
            **fields,
        )

    def inspected(self, inspection: Inspection) -> None:
        self.add(inspection.verdicts)

    def arguments(self, recorded: dict[str, Any]) -> None:
        """The arguments as the trail keeps them (``Inspection.recorded``): what the checks
        found redacted, long strings clipped."""
        self.fields["arguments"] = recorded

    def add(self, verdicts: Iterable[Verdict]) -> None:
        self.verdicts.extend(v.as_record() for v in verdicts)

    def approved(self, approval: ApprovalRequest) -> None:
        """The outcome names who approved the call (the approval records tell the rest)."""
        said = f": {approval.comment}" if approval.comment else ""
        reason = f"{self.decision.reason}; approved by {approval.decided_by_name}{said}"
        self.fields["reason"] = f"{reason} (approval {approval.pk})"[:500]

    def outcome(self, outcome: str, *, error: str = "", result: Any = None) -> AuditRecord:
        return self._record(
            AuditRecord.Kind.OUTCOME,
            outcome=outcome,
            error=error,
            result_digest=_digest(result) if result is not None else "",
            latency_us=round((time.perf_counter() - self.t0) * 1e6),
            created_at=timezone.now(),
        )

    async def refused(self, audit: AuditWriter, outcome: str, *, error: str = "") -> None:
        """A call refused before the upstream: its intent and outcome, both durable."""
        await asyncio.gather(
            audit.write(self.intent), audit.write(self.outcome(outcome, error=error))
        )


def _without_upstream_meta(result: dict[str, Any]) -> dict[str, Any]:
    """Drop envelope fields of the upstream's own protocol era; the edge adds the agent's."""
    result.pop("_meta", None)
    result.pop("resultType", None)
    return result


def _error_text(result: dict[str, Any]) -> str:
    texts = [c.get("text", "") for c in result.get("content", []) if c.get("type") == "text"]
    return " ".join(texts)[:2000]


class PolicyChanged(Exception):
    """A call allowed when decided is refused by the policy applied since."""

    def __init__(self, reason: str, refusal: CallError) -> None:
        super().__init__(reason)
        self.reason, self.refusal = reason, refusal


def _refusal(
    state: TenantState, policy: AgentPolicy, decision: Decision, name: str, arguments: Any
) -> CallError:
    """What a refused agent is told: as much as its tenant's ``denial_detail`` allows."""
    headline = "permission denied"
    if state.denial_detail == "minimal":
        return CallError(PERMISSION_DENIED, headline, {"tool": name})
    reason = decision.reason
    data: dict[str, Any] = {"tool": name, "reason": reason, "rule": decision.rule_id}
    if state.denial_detail == "full":
        data["explanation"] = policy.explain("tool", name, arguments, now=time.time()).lines()
    return CallError(PERMISSION_DENIED, f"{headline}: {reason}", data)


def _not_approved(state: TenantState, approval: ApprovalRequest, refused: str = "") -> CallError:
    """What a held call that may not go on is told (-32002): denied (with the reviewer's
    comment), expired, cancelled or interrupted; or, ``refused``, an approval that cannot be
    used for this call. Nothing was called upstream in any of these."""
    status = str(approval.status)
    data: dict[str, Any] = {"tool": approval.tool, "approval": str(approval.pk), "status": status}
    if refused:
        return CallError(APPROVAL_REQUIRED, f"approval refused: {refused}", data)
    if status == ApprovalRequest.Status.DENIED:
        message = f"approval denied by {approval.decided_by_name}"
        if state.denial_detail != "minimal":
            data.update(reviewer=approval.decided_by_name, comment=approval.comment)
            message += f": {approval.comment}" if approval.comment else ""
        return CallError(APPROVAL_REQUIRED, message, data)
    retry = status == ApprovalRequest.Status.INTERRUPTED
    message = f"approval {status}: {approval.comment}" + ("; call again" if retry else "")
    return CallError(APPROVAL_REQUIRED, message, data)


def _last_seen_write(*, agent_ids: list[int]) -> None:
    Agent.objects.filter(id__in=agent_ids).update(last_seen_at=timezone.now())


def _blocked(verdict: Verdict, tool: str) -> CallError:
    what = "the result was withheld" if verdict.stage is Stage.OUTPUT else "the call was refused"
    return CallError(
        GUARDRAIL_BLOCKED,
        f"{verdict.summary()}; {what}",
        {
            "tool": tool,
            "check": verdict.check,
            "stage": str(verdict.stage),
            "findings": sorted({f.kind for f in verdict.findings}),
        },
    )


def _slow_verdict(
    spec: GuardrailSpec, stage: Stage, found: SlowVerdict | None, error: str = ""
) -> Verdict:
    """A slow check's answer (None: none within its timeout, or ``error``) as a pipeline
    verdict. A slow check cannot redact, so its redact action blocks."""
    if found is None or found.verdict == "error":
        if found is not None:
            error = found.error
        error = error or f"no verdict within {spec.timeout_seconds:g} s"
        failed = Outcome.BLOCK if spec.failure_mode == "closed" else Outcome.ERROR
        return Verdict(spec.name, stage, spec.action, failed, error=error, guardrail_id=spec.id)
    if found.verdict != "flag":
        return Verdict(spec.name, stage, spec.action, Outcome.PASS, guardrail_id=spec.id)
    outcome = Outcome.FLAG if spec.action is Action.FLAG else Outcome.BLOCK
    score = f"score {found.score:.2f}" if found.score is not None else ""
    finding = Finding(spec.name, detail=score)
    return Verdict(spec.name, stage, spec.action, outcome, (finding,), guardrail_id=spec.id)


def _call_error(exc: UpstreamError, tool: ToolEntry) -> CallError:
    data = {"tool": tool.exposed_name, "server": tool.server_name, "outcome": exc.outcome}
    if isinstance(exc, UpstreamRpcError):
        return CallError(exc.code, exc.message, data)
    code = UPSTREAM_TIMEOUT if exc.outcome == "timeout" else UPSTREAM_UNAVAILABLE
    return CallError(code, str(exc), data)


_gateway: Gateway | None = None
_gateway_loop: asyncio.AbstractEventLoop | None = None
_starting: asyncio.Future[Gateway] | None = None


async def get_gateway() -> Gateway:
    """The process's gateway, started on first use on the serving event loop."""
    global _gateway, _gateway_loop, _starting
    loop = asyncio.get_running_loop()
    if _gateway is not None and _gateway_loop is loop:
        return _gateway
    if _starting is not None and _gateway_loop is loop:
        return await asyncio.shield(_starting)
    _gateway_loop, _gateway = loop, None
    _starting = loop.create_future()
    gateway = Gateway()
    try:
        await gateway.start()
    except BaseException as exc:
        _starting.set_exception(exc)
        _starting = None
        raise
    _gateway = gateway
    _starting.set_result(gateway)
    return gateway


async def gateway_shutdown(*, drain_seconds: float = 0.0) -> None:
    """Drain the process's gateway (``Gateway.drain``), then close it: audit flushed,
    upstream sessions ended, its node row gone."""
    global _gateway, _gateway_loop, _starting
    gateway = _gateway
    if gateway is not None:
        # Still the process's gateway while it drains: a request arriving meanwhile must be
        # refused by it (-32008), not start a second gateway in this process.
        await gateway.drain(seconds=drain_seconds)
    _gateway, _gateway_loop, _starting = None, None, None
    if gateway is not None:
        await gateway.close()
