"""Run the gateway (Daphne) on HOST:PORT with the WebSocket limits from settings."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the gateway: HTTP, /mcp and /mcp/ws."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)

    def handle(self, *args, host, port, **options):
        # Imported here: daphne.server installs the asyncio Twisted reactor on import.
        from channels.routing import get_default_application
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from orchestrator import daphne_fixes

        daphne_fixes.install()

        def ready() -> None:
            for address in server.listening_addresses:
                self.stdout.write(
                    f"gateway listening on http://{address[0]}:{address[1]}", ending="\n"
                )
            self.stdout.flush()

        server = Server(
            application=get_default_application(),
            endpoints=build_endpoint_description_strings(host=host, port=port),
            websocket_max_message_size=settings.WS_MAX_FRAME_BYTES,
            websocket_max_frame_size=settings.WS_MAX_FRAME_BYTES,
            ready_callable=ready,
            verbosity=0,
        )
        server.run()
