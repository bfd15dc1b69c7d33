"""Run the gateway (Daphne) on HOST:PORT with the WebSocket limits from settings; on SIGTERM
it drains before it exits (``daphne_fixes.DrainingServer``)."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket

from django.conf import settings
from django.core.management.base import BaseCommand

logger = logging.getLogger(__name__)
GC_THRESHOLD = 50_000


def _started(task: asyncio.Future[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "the gateway did not start; the next request retries", exc_info=task.exception()
        )
        return
    # What start-up allocated (Django, the apps, the gateway's caches) lives as long as the
    # process: frozen, a full collection never walks it again, which halves its pause. And a
    # call's objects die by reference counting: with collections only after 50,000 more
    # container objects are alive than freed (not 700), a call in flight is no longer
    # promoted by a collection that happens to run, and steady traffic triggers none
    # (bench/gc_pauses.py; docs/claims.md "GC pauses").
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 10)


class Command(BaseCommand):
    help = "Serve the gateway: HTTP, /mcp and /mcp/ws."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)

    def handle(self, *args, host, port, **options):
        # Imported here: daphne.server installs the asyncio Twisted reactor on import.
        from channels.routing import get_default_application
        from daphne.endpoints import build_endpoint_description_strings

        from orchestrator import daphne_fixes
        from orchestrator.gateway import get_gateway

        daphne_fixes.install()

        def ready() -> None:
            if not settings.GATEWAY_NODE and server.listening_addresses:
                # Named by host and port, so a restart on the same port recognises the
                # approval requests its former self left pending.
                port = server.listening_addresses[0][1]
                settings.GATEWAY_NODE = f"{socket.gethostname()}:{port}"
            # Start the gateway now, not on the first request: it resolves at once what a
            # former process of this node left held for approval.
            starting = asyncio.ensure_future(get_gateway())
            starting.add_done_callback(_started)
            for address in server.listening_addresses:
                self.stdout.write(
                    f"gateway listening on http://{address[0]}:{address[1]}", ending="\n"
                )
            self.stdout.flush()

        server = daphne_fixes.DrainingServer(
            application=get_default_application(),
            endpoints=build_endpoint_description_strings(host=host, port=port),
            websocket_max_message_size=settings.WS_MAX_FRAME_BYTES,
            websocket_max_frame_size=settings.WS_MAX_FRAME_BYTES,
            ready_callable=ready,
            verbosity=0,
        )
        server.run()
