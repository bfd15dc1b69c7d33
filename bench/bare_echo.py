"""The baseline server: a bare Channels consumer that sends each WebSocket text frame back,
served the way the gateway is served (Daphne, with the same fixes and frame limits), and
nothing else: no database, no authentication, no governance.

    python bench/bare_echo.py [--port 0] [--server daphne|uvicorn] [--lean]

Prints ``bare echo listening on http://HOST:PORT`` once it listens; the echo is at ``/ws``
(any path works).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import django

# The project's settings, so Daphne runs with the gateway's own patches; nothing here
# touches the database.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
django.setup()

from channels.consumer import get_handler_name  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402


class Echo(AsyncWebsocketConsumer):
    channel_layer_alias = None  # as the gateway's consumer: no channel-layer channel

    async def connect(self) -> None:
        await self.accept("mcp" if "mcp" in self.scope.get("subprotocols", []) else None)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data)


class LeanEcho(Echo):
    """The same echo without Channels' per-message hop to the sync thread (which closes stale
    database connections): the gateway's consumer skips it too, so this is the like-for-like
    baseline."""

    async def dispatch(self, message: dict) -> None:
        await getattr(self, get_handler_name(message))(message)


application = Echo.as_asgi()
MAX_FRAME_BYTES = 4 * 1024 * 1024


def serve_daphne(port: int) -> None:
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server

    from orchestrator import daphne_fixes

    daphne_fixes.install()

    def ready() -> None:
        for host, bound in server.listening_addresses:
            print(f"bare echo listening on http://{host}:{bound}", flush=True)

    server = Server(
        application=application,
        endpoints=build_endpoint_description_strings(host="127.0.0.1", port=port),
        websocket_max_message_size=MAX_FRAME_BYTES,
        websocket_max_frame_size=MAX_FRAME_BYTES,
        ready_callable=ready,
        verbosity=0,
    )
    server.run()


def serve_uvicorn(port: int) -> None:
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)  # connections wait in the backlog until uvicorn serves
    print(f"bare echo listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        application, log_level="warning", ws_max_size=MAX_FRAME_BYTES, lifespan="off"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--server", choices=["daphne", "uvicorn"], default="daphne")
    parser.add_argument("--lean", action="store_true", help="without the per-message DB hop")
    options = parser.parse_args()
    if options.lean:
        application = LeanEcho.as_asgi()
    (serve_daphne if options.server == "daphne" else serve_uvicorn)(options.port)
