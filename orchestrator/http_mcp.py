"""MCP over streamable HTTP at /mcp: one JSON-RPC message per POST, answered as JSON.

Era by request (as the MCP SDK routes it): an ``MCP-Protocol-Version`` header naming 2026-07-28
means the stateless era; otherwise the handshake era, whose session id (``Mcp-Session-Id``)
is signed rather than stored, so any gateway process can serve any session.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from mcp_types import HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from orchestrator.auth import bearer_token, origin_allowed
from orchestrator.gateway import AgentContext, AuthError, get_gateway
from orchestrator.protocol.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    JsonRpcError,
    Notification,
    Request,
    RequestId,
    error_response,
    parse_message,
)
from orchestrator.protocol.mcp import (
    McpSession,
    cancelled_request_id,
    check_http_headers,
    is_modern,
)

UNAUTHORIZED = -32010
SESSION_SALT = "orchestrator.mcp-session"
_BAD_REQUEST_CODES = {
    PARSE_ERROR,
    INVALID_REQUEST,
    INVALID_PARAMS,
    HEADER_MISMATCH,
    UNSUPPORTED_PROTOCOL_VERSION,
}
# Handshake-era calls in flight in this process, so a notifications/cancelled can reach them.
_inflight: dict[tuple[str, RequestId], asyncio.Task[Any]] = {}


def _json(body: dict[str, Any], status: int = 200, **headers: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _error(
    code: int, message: str, status: int, request_id: RequestId | None = None, **headers: str
) -> HttpResponse:
    return _json(error_response(request_id, code, message), status, **headers)


def _status_for(response: dict[str, Any]) -> int:
    error = response.get("error")
    if error is None:
        return 200
    if error["code"] == METHOD_NOT_FOUND:
        return 404
    return 400 if error["code"] in _BAD_REQUEST_CODES else 200


def session_id_issue(ctx: AgentContext, version: str) -> str:
    return signing.dumps(
        {"t": ctx.token_digest[:24], "v": version}, salt=SESSION_SALT, compress=True
    )


def session_version(session_id: str, ctx: AgentContext) -> str | None:
    """The protocol version of a session this token opened, or None if it is not one."""
    try:
        data = signing.loads(session_id, salt=SESSION_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("t") != ctx.token_digest[:24]:
        return None
    version = data.get("v")
    return version if version in HANDSHAKE_PROTOCOL_VERSIONS else None


@csrf_exempt
async def mcp_endpoint(request: HttpRequest) -> HttpResponse:
    origin = request.headers.get("Origin")
    if not origin_allowed(origin):
        return _error(INVALID_REQUEST, f"origin {origin!r} is not allowed", 403)
    if request.method not in {"POST", "DELETE"}:
        # No server-initiated stream (yet): clients treat 405 as "none offered".
        return _error(
            METHOD_NOT_FOUND,
            f"{request.method} is not supported on /mcp",
            405,
            Allow="POST, DELETE",
        )

    gateway = await get_gateway()
    try:
        ctx = gateway.authenticate(bearer_token(request.scope["headers"]))
    except AuthError as exc:
        return _error(
            UNAUTHORIZED,
            f"unauthorized: {exc}",
            401,
            WWW_Authenticate=f'Bearer error="invalid_token", error_description="{exc}"',
        )

    session_id = request.headers.get("Mcp-Session-Id", "")
    if request.method == "DELETE":
        # Sessions are signed, not stored: ending one frees nothing here.
        return HttpResponse(status=204 if session_version(session_id, ctx) else 404)

    if request.content_type != "application/json":
        return _error(INVALID_REQUEST, "Content-Type must be application/json", 415)
    declared = int(request.headers.get("Content-Length") or 0)
    limit = settings.MCP_MAX_MESSAGE_BYTES
    if declared > limit:
        return _error(
            INVALID_REQUEST,
            f"message too large: {declared} bytes exceeds the limit of {limit}",
            413,
        )
    try:
        message = parse_message(request.body, max_bytes=limit)
    except JsonRpcError as exc:
        return _json(exc.response(), 413 if "too large" in exc.message else 400)

    version_header = request.headers.get("Mcp-Protocol-Version")
    if isinstance(message, Notification):
        if (request_id := cancelled_request_id(message)) is not None:
            task = (
                _inflight.get((session_id, request_id))
                if isinstance(request_id, str | int)
                else None
            )
            if task is not None:
                task.cancel()
        return HttpResponse(status=202)
    if not isinstance(message, Request):
        return HttpResponse(status=202)  # a response to a server request: none are sent yet

    if version_header is not None and version_header not in HANDSHAKE_PROTOCOL_VERSIONS:
        return await _stateless(request, message, McpSession(gateway, ctx, transport="http"))
    return await _handshake(message, gateway, ctx, session_id, version_header)


async def _stateless(request: HttpRequest, message: Request, session: McpSession) -> HttpResponse:
    try:
        check_http_headers(message, {k.lower(): v for k, v in request.headers.items()})
    except JsonRpcError as exc:
        return _json(exc.response(), 400)
    # A client cancels a stateless request by disconnecting; Django then cancels this view.
    response = await session.handle(message)
    return _json(response, _status_for(response))


async def _handshake(
    message: Request, gateway: Any, ctx: AgentContext, session_id: str, version_header: str | None
) -> HttpResponse:
    if message.method == "initialize":
        session = McpSession(gateway, ctx, transport="http")
        response = await session.handle(message)
        if (
            "error" in response
            or session.protocol_version is None
            or is_modern(session.protocol_version)
        ):
            return _json(response, _status_for(response))
        return _json(response, Mcp_Session_Id=session_id_issue(ctx, session.protocol_version))
    if not session_id:
        return _error(
            INVALID_REQUEST,
            "missing Mcp-Session-Id: send initialize first, or use protocol 2026-07-28 "
            "(MCP-Protocol-Version header and params._meta)",
            400,
            message.id,
        )
    version = session_version(session_id, ctx)
    if version is None:
        return _error(INVALID_REQUEST, "unknown session: initialize again", 404, message.id)
    if version_header is not None and version_header != version:
        return _error(
            INVALID_REQUEST,
            f"MCP-Protocol-Version {version_header!r} differs from the session's {version!r}",
            400,
            message.id,
        )
    session = McpSession(gateway, ctx, transport="http", protocol_version=version)
    key = (session_id, message.id)
    task = asyncio.ensure_future(session.handle(message))
    _inflight[key] = task
    try:
        response = await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # this view itself was cancelled: the client is gone
        return _error(-32800, "request cancelled", 200, message.id)
    finally:
        _inflight.pop(key, None)
    return _json(response, _status_for(response))
