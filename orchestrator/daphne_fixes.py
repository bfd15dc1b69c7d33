"""Fixes to Daphne, installed by `manage.py serve`.

- Daphne drops the ``reason`` of an ASGI ``websocket.close``; an agent closed with 4401
  deserves to read why (revoked, expired…). And it can send 1012 (autobahn refuses it).
- Autobahn's server default on a protocol violation (a frame above the size cap) is to drop
  the TCP connection; we send the close frame with its code (1009) instead.
- Daphne writes each streamed body piece to Twisted at once, which buffers without a limit:
  an audit export to a client that reads slower than the database would pile up in memory.
  The application's next ``send`` now waits until Twisted's buffer has drained.
- On SIGTERM Daphne cancels every application at once and sends no close frame.
  ``DrainingServer`` drains first: it stops listening, so a load balancer sends new
  connections elsewhere; the gateway refuses new calls (-32008), lets the calls in flight
  finish for up to DRAIN_SECONDS, closes each WebSocket with 1012 once its answers are out,
  and flushes the audit writer; only then does Daphne cancel what is left.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from daphne import server as daphne_server
from daphne.http_protocol import WebRequest
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from django.conf import settings
from twisted.internet import defer

from orchestrator.gateway import gateway_shutdown

logger = logging.getLogger(__name__)

MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes


class GatewayWebSocketProtocol(WebSocketProtocol):
    def handle_reply(self, message: dict[str, Any]) -> None:
        if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
            reason = (message.get("reason") or "").encode()[:MAX_REASON_BYTES]
            # sendCloseFrame, not sendClose: autobahn lets an application send only 1000 and
            # 3000-4999, and a draining gateway sends 1012 ("service restart", RFC 6455 §7.4).
            self.sendCloseFrame(
                code=message.get("code") or 1000,
                reasonUtf8=reason.decode(errors="ignore").encode() or None,
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


class DrainingServer(daphne_server.Server):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ports: list[Any] = []

    def listen_success(self, port: Any) -> None:
        self.ports.append(port)
        super().listen_success(port)

    def kill_all_applications(self) -> defer.Deferred[None]:
        # Daphne's "before shutdown" step: drain first, then let it cancel what is left.
        return defer.Deferred.fromFuture(asyncio.ensure_future(self.drain()))

    async def drain(self) -> None:
        loop = asyncio.get_running_loop()
        for port in self.ports:
            await defer.maybeDeferred(port.stopListening).asFuture(loop)
        logger.info("draining: no new connections; waiting for the calls in flight")
        try:
            await gateway_shutdown(drain_seconds=settings.DRAIN_SECONDS)
        except Exception:
            logger.exception("the drain failed; stopping anyway")
        await super().kill_all_applications().asFuture(loop)


def install() -> None:
    daphne_server.WebSocketFactory = GatewayWebSocketFactory
    daphne_server.Server.handle_reply = _handle_reply_with_backpressure
