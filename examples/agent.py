"""A minimal agent: list the tools the gateway's policy allows it, then call one.

python examples/agent.py --url http://127.0.0.1:8000/mcp --token wa_...
python examples/agent.py --url ws://127.0.0.1:8000/mcp/ws --token wa_...
add --mode legacy to use the handshake era (2025-11-25) instead of 2026-07-28

A tool that requires approval (the demo's time__convert_time) waits for a reviewer; the agent
prints the gateway's progress notifications while it waits:
python examples/agent.py --token wa_... --tool time__convert_time \
    --arguments '{"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}'
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from examples.mcp_ws import websocket_client


async def show_progress(progress: float, total: float | None, message: str | None) -> None:
    print(f"  … {message or ''} ({progress:.0f}/{total or 0:.0f} s)", flush=True)


async def main(url: str, token: str, mode: str, tool: str, arguments: dict) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with contextlib.AsyncExitStack() as stack:
        if url.startswith("ws"):
            transport = websocket_client(url, headers)
        else:
            # No read timeout: a call held for approval waits as long as its reviewers take.
            timeout = httpx2.Timeout(30.0, read=None)
            http = await stack.enter_async_context(
                httpx2.AsyncClient(headers=headers, timeout=timeout)
            )
            transport = streamable_http_client(url, http_client=http)
        client = await stack.enter_async_context(Client(transport, mode=mode))
        print(f"connected: protocol {client.protocol_version}")
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(t.name for t in tools))
        print(f"calling {tool} {json.dumps(arguments)}", flush=True)
        try:
            result = await client.call_tool(tool, arguments, progress_callback=show_progress)
        except MCPError as exc:  # refused: denied by policy or a reviewer, blocked, limited
            print(f"refused ({exc.error.code}): {exc.error.message}")
            raise SystemExit(1) from None
        print("result:", result.structured_content or [c.model_dump() for c in result.content])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000/mcp")
    parser.add_argument("--token", required=True)
    parser.add_argument("--mode", default="auto", help="auto | legacy | 2026-07-28")
    parser.add_argument("--tool", default="time__get_current_time")
    parser.add_argument("--arguments", default='{"timezone": "UTC"}', help="the call's, as JSON")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.token, args.mode, args.tool, json.loads(args.arguments)))
