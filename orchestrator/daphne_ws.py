"""Two fixes to Daphne's WebSocket side, installed by `manage.py serve`.

- Daphne drops the ``reason`` of an ASGI ``websocket.close``; an agent closed with 4401
  deserves to read why (revoked, expired…).
- Autobahn's server default on a protocol violation (a frame above the size cap) is to drop
  the TCP connection; we send the close frame with its code (1009) instead.
"""

from __future__ import annotations

from typing import Any

from daphne import server as daphne_server
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


def install() -> None:
    daphne_server.WebSocketFactory = GatewayWebSocketFactory
