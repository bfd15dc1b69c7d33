"""Fixes to Daphne, installed by `manage.py serve`.

- Daphne drops the ``reason`` of an ASGI ``websocket.close``; an agent closed with 4401
  deserves to read why (revoked, expired…).
- Autobahn's server default on a protocol violation (a frame above the size cap) is to drop
  the TCP connection; we send the close frame with its code (1009) instead.
- Daphne writes each streamed body piece to Twisted at once, which buffers without a limit:
  an audit export to a client that reads slower than the database would pile up in memory.
  The application's next ``send`` now waits until Twisted's buffer has drained.
"""

from __future__ import annotations

import asyncio
from typing import Any

from daphne import server as daphne_server
from daphne.http_protocol import WebRequest
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes


class GatewayWebSocketProtocol(WebSocketProtocol):
    def handle_reply(self, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
            reason = (message.get("reason") or "").encode()[:MAX_REASON_BYTES]
            self.sendClose(
                code=message.get("code") or 1000,
                reason=reason.decode(errors="ignore") or None,
            )
            return
        super().handle_reply(message)


class GatewayWebSocketFactory(WebSocketFactory):
    protocol = GatewayWebSocketProtocol

    def setProtocolOptions(self, **options: Any) -> None:
        super().setProtocolOptions(failByDrop=False, **options)


class _Drained:
    """A Twisted push producer that only tells whether the transport wants more: Twisted
    pauses it when the write buffer fills and resumes it once the buffer has gone out."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.event.set()

    def pauseProducing(self) -> None:
        self.event.clear()

    def resumeProducing(self) -> None:
        self.event.set()

    def stopProducing(self) -> None:  # the connection is gone: nobody may wait for it
        self.event.set()


_handle_reply = daphne_server.Server.handle_reply


async def _handle_reply_with_backpressure(
    self: daphne_server.Server, protocol: Any, message: dict[str, Any]
) -> None:
    if not isinstance(protocol, WebRequest) or message.get("type") != "http.response.body":
        await _handle_reply(self, protocol, message)
        return
    drained: _Drained | None = getattr(protocol, "gateway_drained", None)
    if not message.get("more_body", False):
        if drained is not None and protocol.producer is drained:
            protocol.unregisterProducer()  # before Daphne finishes the request
        await _handle_reply(self, protocol, message)
        return
    if drained is None and protocol.producer is None and not protocol.finished:
        drained = protocol.gateway_drained = _Drained()
        protocol.registerProducer(drained, True)
    await _handle_reply(self, protocol, message)
    if drained is not None:
        await drained.event.wait()


def install() -> None:
    daphne_server.WebSocketFactory = GatewayWebSocketFactory
    daphne_server.Server.handle_reply = _handle_reply_with_backpressure
