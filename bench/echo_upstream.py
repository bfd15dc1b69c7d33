"""The least an MCP server over stdio can be: one tool, ``echo``, answered in microseconds.

Benchmarks put it behind the gateway so that the gateway, not the upstream, is what they
measure (the SDK's own servers spend about a millisecond per call validating and
dispatching). It speaks MCP 2025-11-25 over newline-delimited JSON-RPC on stdin/stdout:
``initialize``, ``ping``, ``tools/list`` and ``tools/call``; notifications are read and
ignored; any other request gets -32601.

    python bench/echo_upstream.py
"""

from __future__ import annotations

import json
import sys

TOOL = {
    "name": "echo",
    "description": "Echo the text back.",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}


def answer(request: dict) -> dict | None:
    method, params = request.get("method"), request.get("params") or {}
    if "id" not in request:
        return None  # a notification
    if method == "initialize":
        result = {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "bench-echo", "version": "1"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": [TOOL]}
    elif method == "tools/call" and params.get("name") == "echo":
        text = str((params.get("arguments") or {}).get("text", ""))
        result = {"content": [{"type": "text", "text": text}], "isError": False}
    else:
        error = {"code": -32601, "message": f"no method {method!r} here"}
        return {"jsonrpc": "2.0", "id": request["id"], "error": error}
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


def main() -> None:
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        response = answer(json.loads(line))
        if response is not None:
            out.write(json.dumps(response, separators=(",", ":")) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
