"""A small WebSocket transport (subprotocol "mcp") for the mcp 2.x `Client`.

mcp 2.x dropped its WebSocket client; the gateway speaks MCP over WebSocket at /mcp/ws,
one JSON-RPC message per text frame. Use: `Client(websocket_client(url, headers), mode=...)`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from mcp.client._transport import TransportStreams
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol


@asynccontextmanager
async def websocket_client(
    url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[TransportStreams]:
    read_w, read_r = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_w, write_r = anyio.create_memory_object_stream[SessionMessage](0)
    async with connect(url, subprotocols=[Subprotocol("mcp")], additional_headers=headers) as ws:
        if ws.subprotocol != "mcp":
            raise ConnectionError(
                f"server did not accept subprotocol 'mcp' (got {ws.subprotocol!r})"
            )

        async def ws_reader() -> None:
            async with read_w:
                try:
                    async for raw in ws:
                        try:
                            msg = jsonrpc_message_adapter.validate_json(raw, by_name=False)
                        except Exception as exc:  # bad frame -> surfaced to the session, not fatal
                            await read_w.send(exc)
                            continue
                        await read_w.send(SessionMessage(msg))
                except ConnectionClosed:
                    pass  # closing read_w = EOF; pending requests resolve with CONNECTION_CLOSED

        async def ws_writer() -> None:
            async with write_r:
                async for (
                    sm
                ) in write_r:  # sm.metadata.headers (Mcp-Method etc.) is ignored: no HTTP here
                    await ws.send(sm.message.model_dump_json(by_alias=True, exclude_unset=True))

        async with anyio.create_task_group() as tg:
            tg.start_soon(ws_reader)
            tg.start_soon(ws_writer)
            try:
                yield read_r, write_w
            finally:
                await write_w.aclose()
                await ws.close()
                tg.cancel_scope.cancel()
