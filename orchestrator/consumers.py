"""One consumer per connected agent: MCP JSON-RPC over WebSocket (subprotocol "mcp").

Close codes (docs/api.md): 4401 — missing, unknown, expired or revoked token (also when it is
revoked while connected); 1009 — a frame above the transport hard cap. A connection that does
not offer the "mcp" subprotocol, or comes from a page of another origin, is refused at the
handshake (HTTP 403).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from orchestrator.auth import bearer_token, header, origin_allowed
from orchestrator.gateway import AgentContext, AuthError, Gateway, get_gateway
from orchestrator.protocol.jsonrpc import (
    INVALID_REQUEST,
    JsonRpcError,
    Notification,
    Request,
    RequestId,
    parse_message,
)
from orchestrator.protocol.mcp import McpSession, cancelled_request_id

SUBPROTOCOL = "mcp"
CLOSE_UNAUTHORIZED = 4401


class AgentConsumer(AsyncWebsocketConsumer):
    gateway: Gateway
    ctx: AgentContext
    session: McpSession

    async def connect(self) -> None:
        self.inflight: dict[RequestId, asyncio.Task[None]] = {}
        self.unsubscribe = None
        offered = SUBPROTOCOL in self.scope.get("subprotocols", [])
        if not offered or not origin_allowed(header(self.scope["headers"], b"origin")):
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return
        await self.accept(SUBPROTOCOL)
        self.gateway = await get_gateway()
        try:
            self.ctx = self.gateway.authenticate(bearer_token(self.scope["headers"]))
        except AuthError as exc:
            await self.close(code=CLOSE_UNAUTHORIZED, reason=f"unauthorized: {exc}")
            return
        self.session = McpSession(self.gateway, self.ctx, transport="ws")
        self.unsubscribe = self.gateway.subscribe(self.ctx.tenant_id, self.governance_changed)

    async def disconnect(self, code: int) -> None:
        if self.unsubscribe is not None:
            self.unsubscribe()
        for task in self.inflight.values():
            task.cancel()

    def governance_changed(self) -> None:
        """The tenant's state moved: close at once if this token may no longer be used."""
        try:
            self.gateway.check(self.ctx)
        except AuthError as exc:
            asyncio.get_running_loop().create_task(self.refuse(exc))

    async def refuse(self, exc: AuthError) -> None:
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
        for task in self.inflight.values():
            task.cancel()
        await self.close(code=CLOSE_UNAUTHORIZED, reason=f"unauthorized: {exc}")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.unsubscribe is None:
            return  # refused or closing
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
            await self.send_json(exc.response())
            return
        if isinstance(message, Notification):
            self.cancel(cancelled_request_id(message))
        elif isinstance(message, Request):
            if message.id in self.inflight:
                await self.send_json(
                    JsonRpcError(
                        INVALID_REQUEST,
                        f"request id {message.id!r} is already in use",
                        request_id=message.id,
                    ).response()
                )
            elif message.method == "tools/call":
                # Calls run concurrently; everything else is answered in order, at once.
                task = asyncio.get_running_loop().create_task(self.answer(message))
                self.inflight[message.id] = task
                task.add_done_callback(lambda _t, rid=message.id: self.inflight.pop(rid, None))
            else:
                await self.answer(message)

    async def answer(self, request: Request) -> None:
        try:
            response = await self.session.handle(request)
        except asyncio.CancelledError:
            return  # the client cancelled it or left: no response is due
        await self.send_json(response)

    def cancel(self, request_id: Any) -> None:
        valid = isinstance(request_id, str | int) and not isinstance(request_id, bool)
        task = self.inflight.get(request_id) if valid else None
        if task is not None:
            task.cancel()

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(message, ensure_ascii=False, separators=(",", ":")))
