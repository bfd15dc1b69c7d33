"""MCP over streamable HTTP at /mcp: one JSON-RPC message per POST, answered as JSON (but
``subscriptions/listen``, answered with its stream, and a ``tools/call`` whose client asked for
progress and accepts ``text/event-stream``: answered on a stream that carries its progress
notifications while it waits for approval, then its response).

Era by request (as the MCP SDK routes it): an ``MCP-Protocol-Version`` header naming 2026-07-28
means the stateless era; otherwise the handshake era, whose session id (``Mcp-Session-Id``)
is signed rather than stored, so any gateway process can serve any session.

Server-initiated messages travel on two kinds of SSE stream (``text/event-stream``), each
bounded in time, kept alive with comments, and ended when the client leaves or its token can
no longer be used:

- handshake era: ``GET /mcp`` with the session's id (2025-11-25 transports, "Listening for
  Messages from the Server"). Each event id carries the tool-list fingerprint the client has
  been told, and the session id the one of ``initialize``, so a client reconnecting with
  ``Last-Event-ID`` (or opening its first stream late) still hears of a change it missed;
- 2026-07-28: the response to a ``subscriptions/listen`` POST (2026-07-28 transports,
  "Receiving Messages"; basic/patterns/subscriptions). No ids: those streams are not resumable.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from mcp_types import HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from orchestrator.auth import bearer_token, origin_allowed
from orchestrator.gateway import (
    RATE_LIMITED_CODE,
    AgentContext,
    AuthError,
    Gateway,
    get_gateway,
)
from orchestrator.protocol.jsonrpc import (
    INTERNAL_ERROR,
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
    LISTEN,
    MAX_SUBSCRIPTIONS,
    McpSession,
    ToolListWatch,
    cancelled_request_id,
    check_http_headers,
    is_modern,
    list_changed_notification,
    progress_token,
)
from orchestrator.sse import event_stream

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

# Server-initiated streams (their lifetime and keep-alive period are settings).
STREAM_RETRY_MS = 500  # SSE "retry": how soon a client reconnects a GET stream that ended
_FINGERPRINT = re.compile(r"[0-9a-f]{32}")


class _Stream:
    """One open SSE stream of this process: woken by governance changes, or stopped."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()


# A session has at most one GET stream per process (a newer one replaces it, so the server
# sends each message on one stream only); a token, at most MAX_SUBSCRIPTIONS streams.
_session_streams: dict[str, _Stream] = {}
_token_streams: Counter[str] = Counter()


def _json(body: dict[str, Any], status: int = 200, **headers: str) -> HttpResponse:
    response = HttpResponse(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    error = body.get("error")
    if isinstance(error, dict) and error.get("code") == RATE_LIMITED_CODE:
        # The JSON-RPC error says when; the header says it to HTTP clients and proxies too.
        retry_after = (error.get("data") or {}).get("retryAfterSeconds", 1)
        response["Retry-After"] = str(max(1, math.ceil(retry_after)))
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


def session_id_issue(ctx: AgentContext, version: str, tools: str | None = None) -> str:
    """A signed session id: the token's, the version, and the tool-list fingerprint as of
    ``initialize`` (what the GET stream compares against when it opens)."""
    data = {"t": ctx.token_digest[:24], "v": version}
    if tools is not None:
        data["f"] = tools
    return signing.dumps(data, salt=SESSION_SALT, compress=True)


def _session_data(session_id: str, ctx: AgentContext) -> dict[str, Any] | None:
    try:
        data = signing.loads(session_id, salt=SESSION_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("t") != ctx.token_digest[:24]:
        return None
    return data if data.get("v") in HANDSHAKE_PROTOCOL_VERSIONS else None


def session_version(session_id: str, ctx: AgentContext) -> str | None:
    """The protocol version of a session this token opened, or None if it is not one."""
    data = _session_data(session_id, ctx)
    return data["v"] if data else None


@csrf_exempt
async def mcp_endpoint(request: HttpRequest) -> HttpResponse:
    origin = request.headers.get("Origin")
    if not origin_allowed(origin):
        return _error(INVALID_REQUEST, f"origin {origin!r} is not allowed", 403)
    if request.method not in {"GET", "POST", "DELETE"}:
        return _error(
            METHOD_NOT_FOUND,
            f"{request.method} is not supported on /mcp",
            405,
            Allow="GET, POST, DELETE",
        )
    version_header = request.headers.get("Mcp-Protocol-Version")
    if request.method == "GET" and (
        not request.headers.get("Mcp-Session-Id") or is_modern(version_header)
    ):
        # The GET stream belongs to a handshake-era session; 2026-07-28 has none (it listens
        # with subscriptions/listen). Clients take 405 as "no stream offered here".
        return _error(
            METHOD_NOT_FOUND,
            "GET /mcp opens the server stream of a handshake-era session: send its "
            "Mcp-Session-Id (protocol 2026-07-28 uses subscriptions/listen)",
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
    if request.method == "GET":
        return _session_stream(request, gateway, ctx, session_id, version_header)
    if request.method == "DELETE":
        # Sessions are signed, not stored: ending one only ends its GET stream here.
        if not session_version(session_id, ctx):
            return HttpResponse(status=404)
        if (stream := _session_streams.get(session_id)) is not None:
            stream.stop()
        return HttpResponse(status=204)

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
    return await _handshake(request, message, gateway, ctx, session_id, version_header)


async def _stateless(request: HttpRequest, message: Request, session: McpSession) -> HttpResponse:
    try:
        check_http_headers(message, {k.lower(): v for k, v in request.headers.items()})
    except JsonRpcError as exc:
        return _json(exc.response(), 400)
    if message.method == LISTEN:
        return _listen(request, message, session)
    if _streams_progress(request, message):
        return _progress_stream(message, session)
    # A client cancels a stateless request by disconnecting; Django then cancels this view.
    response = await session.handle(message)
    return _json(response, _status_for(response))


async def _handshake(
    request: HttpRequest,
    message: Request,
    gateway: Any,
    ctx: AgentContext,
    session_id: str,
    version_header: str | None,
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
        tools = session.tools.known if session.tools is not None else None
        return _json(
            response, Mcp_Session_Id=session_id_issue(ctx, session.protocol_version, tools)
        )
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
    if _streams_progress(request, message):
        return _progress_stream(message, session, key)
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


def _streams_progress(request: HttpRequest, message: Request) -> bool:
    return (
        message.method == "tools/call"
        and progress_token(message) is not None
        and _accepts_event_stream(request)
    )


def _progress_stream(
    message: Request, session: McpSession, key: tuple[str, RequestId] | None = None
) -> StreamingHttpResponse:
    """Answer a tools/call on an SSE stream: its progress notifications as they come, then
    its response. A client that leaves cancels the call (and so its approval request);
    ``key`` registers it for ``notifications/cancelled`` (handshake era)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def notify(notification: dict[str, Any]) -> None:
        queue.put_nowait(notification)

    session.notify = notify

    async def events() -> AsyncIterator[bytes]:
        task = asyncio.ensure_future(session.handle(message))
        if key is not None:
            _inflight[key] = task
        try:
            while not task.done():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield _sse(getter.result())
                else:
                    getter.cancel()
            while not queue.empty():
                yield _sse(queue.get_nowait())
            try:
                response = task.result()
            except asyncio.CancelledError:  # notifications/cancelled
                response = error_response(message.id, -32800, "request cancelled")
            yield _sse(response)
        finally:
            if key is not None:
                _inflight.pop(key, None)
            task.cancel()

    return event_stream(events())


# --- server-initiated streams ----------------------------------------------------------------


def _session_stream(
    request: HttpRequest,
    gateway: Gateway,
    ctx: AgentContext,
    session_id: str,
    version_header: str | None,
) -> HttpResponse:
    """Handshake era: GET /mcp opens the session's stream of ``tools/list_changed``."""
    data = _session_data(session_id, ctx)
    if data is None:
        return _error(INVALID_REQUEST, "unknown session: initialize again", 404)
    if version_header is not None and version_header != data["v"]:
        return _error(
            INVALID_REQUEST,
            f"MCP-Protocol-Version {version_header!r} differs from the session's {data['v']!r}",
            400,
        )
    if not _accepts_event_stream(request):
        return _error(INVALID_REQUEST, "GET /mcp answers with Content-Type text/event-stream", 406)
    if _token_streams[ctx.token_digest] >= MAX_SUBSCRIPTIONS:
        return _too_many_streams()
    # What the client was last told: the fingerprint in the id of the last event it saw,
    # else the one of initialize. A change since then is sent as soon as the stream opens.
    told = _fingerprint_of(request.headers.get("Last-Event-ID")) or data.get("f")
    watch = ToolListWatch(gateway, ctx, known=told)
    stream = _Stream()

    def due() -> list[bytes]:
        if watch.changed():
            return [_sse(list_changed_notification(), event_id=_event_id(watch.known))]
        return []

    async def events() -> AsyncIterator[bytes]:
        if (older := _session_streams.get(session_id)) is not None:
            older.stop()
        _session_streams[session_id] = stream
        try:
            primer = _sse(event_id=_event_id(watch.known), retry=STREAM_RETRY_MS)
            async for chunk in _serve(gateway, ctx, stream, opening=primer, due=due):
                yield chunk
        finally:
            if _session_streams.get(session_id) is stream:
                del _session_streams[session_id]

    return event_stream(events())


def _listen(request: HttpRequest, message: Request, session: McpSession) -> HttpResponse:
    """2026-07-28: the response to ``subscriptions/listen`` is the subscription's stream."""
    if not _accepts_event_stream(request):
        return _error(
            INVALID_REQUEST,
            "subscriptions/listen answers with Content-Type text/event-stream",
            406,
            message.id,
        )
    try:
        subscription = session.open_listen(message)
    except JsonRpcError as exc:
        response = exc.response()
        return _json(response, _status_for(response))
    if _token_streams[session.ctx.token_digest] >= MAX_SUBSCRIPTIONS:
        return _too_many_streams(message.id)

    def due() -> list[bytes]:
        return [_sse(notification) for notification in subscription.due()]

    def ending(exc: AuthError | None) -> bytes:
        # Time is up: a graceful end (the listen result); else the token's refusal.
        if exc is None:
            return _sse(subscription.closed())
        return _sse(error_response(subscription.id, UNAUTHORIZED, f"unauthorized: {exc}"))

    return event_stream(
        _serve(
            session.gateway,
            session.ctx,
            _Stream(),
            opening=_sse(subscription.acknowledged()),
            due=due,
            ending=ending,
        )
    )


async def _serve(
    gateway: Gateway,
    ctx: AgentContext,
    stream: _Stream,
    *,
    opening: bytes,
    due: Callable[[], list[bytes]],
    ending: Callable[[AuthError | None], bytes] | None = None,
) -> AsyncIterator[bytes]:
    """The life of one stream: ``opening``, then whatever ``due`` says after each governance
    change, a comment every keep-alive period, and ``ending`` once the token may no longer be
    used or the stream's time is up. A client that leaves cancels it wherever it waits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.MCP_STREAM_MAX_SECONDS
    keepalive = settings.MCP_STREAM_KEEPALIVE_SECONDS
    unsubscribe = gateway.subscribe(ctx.tenant_id, stream.wake.set)
    _token_streams[ctx.token_digest] += 1
    try:
        yield opening
        while True:
            stream.wake.clear()  # before looking, so a change after the look wakes us again
            try:
                gateway.check(ctx)
            except AuthError as exc:
                if ending is not None:
                    yield ending(exc)
                return
            for chunk in due():
                yield chunk
            left = deadline - loop.time()
            if stream.stopped or left <= 0:
                if ending is not None:
                    yield ending(None)
                return
            try:
                await asyncio.wait_for(stream.wake.wait(), min(keepalive, left))
            except TimeoutError:
                yield b": keep-alive\n\n"
    finally:
        unsubscribe()
        _token_streams[ctx.token_digest] -= 1
        if _token_streams[ctx.token_digest] <= 0:
            del _token_streams[ctx.token_digest]


def _accepts_event_stream(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept")
    return accept is None or any(t in accept for t in ("text/event-stream", "text/*", "*/*"))


def _too_many_streams(request_id: RequestId | None = None) -> HttpResponse:
    return _error(
        INTERNAL_ERROR,
        f"subscription limit reached: {MAX_SUBSCRIPTIONS} open streams per token",
        429,
        request_id,
    )


def _event_id(fingerprint: str) -> str:
    """Unique per event, and carries the tool-list fingerprint the client is being told."""
    return f"{secrets.token_hex(4)}-{fingerprint}"


def _fingerprint_of(last_event_id: str | None) -> str | None:
    fingerprint = (last_event_id or "").rpartition("-")[2]
    return fingerprint if _FINGERPRINT.fullmatch(fingerprint) else None


def _sse(
    message: dict[str, Any] | None = None, *, event_id: str = "", retry: int | None = None
) -> bytes:
    """One SSE event; without a message, an empty one (the stream's primer)."""
    lines = [f"id: {event_id}"] if event_id else []
    if retry is not None:
        lines.append(f"retry: {retry}")
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":")) if message else ""
    lines.append(f"data: {data}")
    return ("\n".join(lines) + "\n\n").encode()
