"""One consumer per connected agent: MCP JSON-RPC over WebSocket (subprotocol "mcp").

Close codes (docs/api.md): 4401 — missing, unknown, expired or revoked token (also when it is
revoked while connected); 1009 — a frame above the transport hard cap; 1012 — the gateway
restarts (every call of the connection was answered first): reconnect. A connection that does
not offer the "mcp" subprotocol, or comes from a page of another origin, is refused at the
handshake (HTTP 403).

Server-initiated messages (docs/api.md, "Tool list changes"): after each governance change the
connection re-checks its token, then sends ``notifications/tools/list_changed`` if the agent's
tool list changed — to an initialized handshake-era connection, and on each 2026-07-28
``subscriptions/listen`` stream that asked for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from orchestrator.auth import bearer_token, header, origin_allowed
from orchestrator.gateway import (
    CLOSE_RESTARTING,
    RATE_LIMITED_CODE,
    AgentContext,
    AuthError,
    Gateway,
    get_gateway,
)
from orchestrator.protocol.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    JsonRpcError,
    Notification,
    Request,
    RequestId,
    parse_message,
)
from orchestrator.protocol.mcp import (
    LISTEN,
    MAX_SUBSCRIPTIONS,
    McpSession,
    cancelled_request_id,
)

logger = logging.getLogger(__name__)

SUBPROTOCOL = "mcp"
CLOSE_UNAUTHORIZED = 4401
RESTARTING = "gateway restarting: reconnect"
MAX_INFLIGHT_CALLS = 64  # tools/call accepted at once on one connection
# Fairness between the connections of a process, which share one event loop, one audit writer
# and one pipe per upstream, each first come, first served: a connection's accepted calls start
# MAX_RUNNING_CALLS at a time and the others wait their turn, so a connection that floods calls
# queues them on itself, not ahead of every other agent's. A call still running after
# SLOT_SECONDS lets the next one start: it waits (on a slow upstream, on a reviewer) rather than
# works, and must not hold up the connection's other calls for long.
MAX_RUNNING_CALLS = 2
SLOT_SECONDS = 0.1
# A frame refused as the client's fault (not JSON-RPC, invalid params, an unknown method or
# tool, a request id in use, above MCP_MAX_MESSAGE_BYTES, over the in-flight cap) delays the
# next frame of its connection by this much: a client that sends junk, or resends at once what
# was refused, cannot keep the event loop busy answering it. A well-behaved client never waits.
FAULT_SECONDS = 0.025
FAULTS = frozenset({PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS})


class AgentConsumer(AsyncWebsocketConsumer):
    # No channel layer per connection: the gateway's in-process listeners tell it of changes,
    # so a Redis outage cannot end connections (a consumer's layer receive would raise).
    channel_layer_alias = None
    gateway: Gateway
    ctx: AgentContext
    session: McpSession

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' own dispatch first closes stale database connections through the sync
        # thread: a thread hop per frame. This consumer never touches the ORM itself (the
        # gateway's database_sync_to_async calls do that housekeeping), so it skips the hop.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.inflight: dict[RequestId, asyncio.Task[None]] = {}
        self.running = asyncio.Semaphore(MAX_RUNNING_CALLS)
        self.paused_until = 0.0  # loop time: no frame is read before (FAULT_SECONDS)
        self.outbox: set[asyncio.Task[None]] = set()  # server-initiated sends under way
        self.unsubscribe = None
        self.undrain = None
        self.gone = asyncio.Event()
        offered = SUBPROTOCOL in self.scope.get("subprotocols", [])
        if not offered or not origin_allowed(header(self.scope["headers"], b"origin")):
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return
        await self.accept(SUBPROTOCOL)
        self.gateway = await get_gateway()
        if self.gateway.draining:
            await self.close(code=CLOSE_RESTARTING, reason=RESTARTING)
            return
        try:
            self.ctx = self.gateway.authenticate(bearer_token(self.scope["headers"]))
        except AuthError as exc:
            await self.close(code=CLOSE_UNAUTHORIZED, reason=f"unauthorized: {exc}")
            return
        self.session = McpSession(self.gateway, self.ctx, transport="ws", notify=self.send_json)
        self.unsubscribe = self.gateway.subscribe(self.ctx.tenant_id, self.governance_changed)
        self.undrain = self.gateway.on_drain(self.restart)
        self.gateway.connected(self.ctx, +1)

    async def disconnect(self, code: int) -> None:
        self.gone.set()
        if self.undrain is not None:
            self.undrain()
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
            self.gateway.connected(self.ctx, -1)
        for task in (*self.inflight.values(), *self.outbox):
            task.cancel()

    def governance_changed(self) -> None:
        """The tenant's state moved: close at once if this token may no longer be used, else
        tell the client if its tool list changed."""
        try:
            self.gateway.check(self.ctx)
        except AuthError as exc:
            asyncio.get_running_loop().create_task(self.refuse(exc))
            return
        try:
            due = self.session.changes()
        except Exception:  # a listener must not break the gateway's refresh for the others
            logger.exception("tool list change check failed for agent %s", self.ctx.agent_name)
            return
        if due:
            task = asyncio.get_running_loop().create_task(self.send_all(due))
            self.outbox.add(task)
            task.add_done_callback(self.outbox.discard)

    async def restart(self) -> None:
        """The gateway drains: once this connection's calls are answered (the drain saw to
        them), close it with 1012, and wait for the client to answer the close frame."""
        if self.inflight:
            await asyncio.wait(list(self.inflight.values()))
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
            self.gateway.connected(self.ctx, -1)
        await self.close(code=CLOSE_RESTARTING, reason=RESTARTING)
        await self.gone.wait()

    async def refuse(self, exc: AuthError) -> None:
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
            self.gateway.connected(self.ctx, -1)
        for task in self.inflight.values():
            task.cancel()
        await self.close(code=CLOSE_UNAUTHORIZED, reason=f"unauthorized: {exc}")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.unsubscribe is None:
            return  # refused or closing
        pause = self.paused_until - asyncio.get_running_loop().time()
        if pause > 0:
            await asyncio.sleep(pause)
            if self.unsubscribe is None:
                return
        try:
            self.gateway.check(self.ctx)
        except AuthError as exc:
            await self.refuse(exc)
            return
        try:
            if text_data is None:
                raise JsonRpcError(
                    INVALID_REQUEST, "binary frames are not supported: send JSON text"
                )
            message = parse_message(text_data, max_bytes=settings.MCP_MAX_MESSAGE_BYTES)
        except JsonRpcError as exc:
            self.fault()
            await self.send_json(exc.response())
            return
        if isinstance(message, Notification):
            self.cancel(cancelled_request_id(message))
            if self.session.notified(message):
                # Initialized: a change since initialize is told now, later ones as they come.
                await self.send_all(self.session.changes())
        elif isinstance(message, Request):
            if message.id in self.inflight or message.id in self.session.subscriptions:
                self.fault()
                await self.send_json(
                    JsonRpcError(
                        INVALID_REQUEST,
                        f"request id {message.id!r} is already in use",
                        request_id=message.id,
                    ).response()
                )
            elif message.method == "tools/call" and len(self.inflight) >= MAX_INFLIGHT_CALLS:
                # One connection cannot pile up unbounded work on the process's event loop.
                self.fault()
                await self.send_json(
                    JsonRpcError(
                        RATE_LIMITED_CODE,
                        f"too many calls in flight on this connection (at most "
                        f"{MAX_INFLIGHT_CALLS}); wait for an answer first",
                        request_id=message.id,
                        data={"retryAfterSeconds": 1},
                    ).response()
                )
            elif message.method == "tools/call":
                # Calls run concurrently (MAX_RUNNING_CALLS at a time); everything else is
                # answered in order, at once.
                task = asyncio.get_running_loop().create_task(self.call(message))
                self.inflight[message.id] = task
                task.add_done_callback(lambda _t, rid=message.id: self.inflight.pop(rid, None))
            elif message.method == LISTEN:
                await self.listen(message)
            else:
                await self.answer(message)

    async def call(self, request: Request) -> None:
        """A tools/call, once one of the connection's running slots is free."""
        await self.running.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.running.release()

        timer = asyncio.get_running_loop().call_later(SLOT_SECONDS, release)
        try:
            await self.answer(request)
        finally:
            timer.cancel()
            release()

    async def answer(self, request: Request) -> None:
        try:
            response = await self.session.handle(request)
        except asyncio.CancelledError:
            return  # the client cancelled it or left: no response is due
        if response.get("error", {}).get("code") in FAULTS:
            self.fault()
        await self.send_json(response)

    def fault(self) -> None:
        """The client sent what must be refused: its next frame waits FAULT_SECONDS more."""
        now = asyncio.get_running_loop().time()
        self.paused_until = max(self.paused_until, now) + FAULT_SECONDS

    async def listen(self, request: Request) -> None:
        """2026-07-28 ``subscriptions/listen``: acknowledge, then notify on this connection until
        the client cancels it (``notifications/cancelled``) or the connection ends."""
        if len(self.session.subscriptions) >= MAX_SUBSCRIPTIONS:
            await self.send_json(
                JsonRpcError(
                    INTERNAL_ERROR,
                    f"subscription limit reached: {MAX_SUBSCRIPTIONS} listen streams "
                    "per connection",
                    request_id=request.id,
                ).response()
            )
            return
        try:
            subscription = self.session.open_listen(request)
        except JsonRpcError as exc:
            await self.send_json(exc.response())
            return
        await self.send_json(subscription.acknowledged())
        # Registered only now, so nothing on the stream can precede its acknowledgement; a
        # change that landed while it was being sent is caught by the look right after.
        self.session.subscriptions[subscription.id] = subscription
        await self.send_all(subscription.due())

    def cancel(self, request_id: Any) -> None:
        valid = isinstance(request_id, str | int) and not isinstance(request_id, bool)
        if not valid:
            return
        task = self.inflight.get(request_id)
        if task is not None:
            task.cancel()
        self.session.subscriptions.pop(request_id, None)  # a listen stream ends without reply

    async def send_all(self, messages: list[dict[str, Any]]) -> None:
        for message in messages:
            if self.unsubscribe is None:
                return  # refused or closing: nothing more goes out
            await self.send_json(message)

    async def send_json(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        # Disconnected: the server is closing the connection (1009: a frame above the cap) and
        # its websocket.disconnect has not reached this consumer yet, so nobody is left to
        # answer. Raised on, it would end the consumer without its disconnect() (a leaked
        # subscription and presence, calls left running) and log a traceback per answer.
        with contextlib.suppress(Disconnected):
            await self.send(text_data=text)
