"""A real MCP server (the SDK's MCPServer over stdio) whose tools misbehave on request, so
tests can watch the gateway survive an upstream that is slow or dies mid-call."""

from __future__ import annotations

import asyncio
import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("testkit", subscriptions=False)


@server.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


@server.tool(description="Pretend to visit a URL, reading up to max_bytes: echoes what it got.")
def visit(url: str, max_bytes: int = 1024) -> str:
    return f"visited {url} ({max_bytes} bytes)"


@server.tool(description="The process id of this server.")
def pid() -> int:
    return os.getpid()


@server.tool(description="Answer after the given number of seconds.")
async def sleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(description="Add a tool named `name` to this server, mid-session.")
def grow(name: str) -> str:
    server.add_tool(lambda: name, name=name, description=f"added at run time: {name}")
    return f"added {name}"


@server.tool(description="Kill this server process while the call is in flight.")
def crash() -> str:
    os._exit(17)


if __name__ == "__main__":
    asyncio.run(server.run_stdio_async())
