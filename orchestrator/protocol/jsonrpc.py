"""JSON-RPC 2.0 as MCP uses it: one message per frame or POST body, never a batch.

Every way a message can be wrong maps to an error with a message that says what was wrong;
docs/api.md lists them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

RequestId = str | int


class JsonRpcError(Exception):
    """A failure to report to the peer as a JSON-RPC error object."""

    def __init__(
        self, code: int, message: str, *, request_id: RequestId | None = None, data: Any = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.data = data

    def response(self) -> dict[str, Any]:
        return error_response(self.request_id, self.code, self.message, self.data)


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    """A response from the client (to a server request); the gateway sends none yet."""

    id: RequestId | None


Message = Request | Notification | Response


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: JSON has no infinity, and the audit chain refuses it
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def parse_message(raw: str | bytes, *, max_bytes: int) -> Message:
    """Parse and validate one JSON-RPC message; raise JsonRpcError saying what is wrong."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise JsonRpcError(
            INVALID_REQUEST, f"message too large: {size} bytes exceeds the limit of {max_bytes}"
        )
    try:
        data = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise JsonRpcError(PARSE_ERROR, "parse error: message is not valid UTF-8") from None
    except RecursionError:
        raise JsonRpcError(PARSE_ERROR, "parse error: JSON nested too deeply") from None
    except ValueError as exc:
        raise JsonRpcError(PARSE_ERROR, f"parse error: {exc}") from None
    return validate_message(data)


def validate_message(data: Any) -> Message:
    if isinstance(data, list):
        raise JsonRpcError(INVALID_REQUEST, "batches are not supported: send one message at a time")
    if not isinstance(data, dict):
        raise JsonRpcError(
            INVALID_REQUEST, f"a message must be a JSON object, got {type(data).__name__}"
        )
    request_id = data.get("id")
    valid_id = isinstance(request_id, str | int) and not isinstance(request_id, bool)
    echo_id = request_id if valid_id else None
    if data.get("jsonrpc") != "2.0":
        raise JsonRpcError(
            INVALID_REQUEST, 'missing or wrong "jsonrpc": must be "2.0"', request_id=echo_id
        )
    if "method" not in data:
        if ("result" in data) != ("error" in data):
            return Response(id=echo_id)
        raise JsonRpcError(INVALID_REQUEST, 'a request needs a "method"', request_id=echo_id)
    method = data["method"]
    if not isinstance(method, str) or not method:
        raise JsonRpcError(
            INVALID_REQUEST, '"method" must be a non-empty string', request_id=echo_id
        )
    params = data.get("params", {})
    if not isinstance(params, dict):
        raise JsonRpcError(INVALID_PARAMS, '"params" must be an object', request_id=echo_id)
    if "id" not in data:
        return Notification(method=method, params=params)
    if not valid_id:
        raise JsonRpcError(INVALID_REQUEST, '"id" must be a string or an integer')
    return Request(id=request_id, method=method, params=params)


def result_response(request_id: RequestId, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_response(
    request_id: RequestId | None, code: int, message: str, data: Any = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}
