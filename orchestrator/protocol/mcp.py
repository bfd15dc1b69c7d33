"""MCP methods, both spec eras, independent of the transport (WebSocket or streamable HTTP).

Handshake era (≤ 2025-11-25): ``initialize`` fixes the version for the connection/session.
Stateless era (2026-07-28): no handshake; every request carries its version and the client's
capabilities in ``params._meta``, results carry ``resultType`` (and cache hints on lists).

Tool list changes: the handshake era sends ``notifications/tools/list_changed`` to an initialized
session; 2026-07-28 sends it only on a ``subscriptions/listen`` stream that asked for
``toolsListChanged``. Either way it is sent only when what the agent's ``tools/list`` shows
(names and definitions) differs from what the client was last told (``ToolListWatch``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mcp_types import HEADER_MISMATCH, UNSUPPORTED_PROTOCOL_VERSION
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)

from orchestrator import __version__
from orchestrator.approvals import Progress
from orchestrator.gateway import AgentContext, CallError, CallMeta, Gateway
from orchestrator.protocol.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    JsonRpcError,
    Notification,
    Request,
    RequestId,
    result_response,
)

logger = logging.getLogger(__name__)

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
SERVER_INFO = {"name": "workingagents-orchestrator", "version": __version__}
# Both eras: the gateway tells clients when their tool list changes (in 2026-07-28, on
# subscriptions/listen streams, which is what listChanged means there).
CAPABILITIES: dict[str, Any] = {"tools": {"listChanged": True}}
LISTEN = "subscriptions/listen"
TOOLS_LIST_CHANGED = "notifications/tools/list_changed"
PROGRESS = "notifications/progress"
Notify = Callable[[dict[str, Any]], Awaitable[None]]
MAX_SUBSCRIPTIONS = 16  # open listen streams per WebSocket connection (HTTP: per token)
MAX_TOOL_NAME = 300  # characters; the audit trail keeps this much of a name
INSTRUCTIONS = (
    "Tools are namespaced by upstream server (server__tool). Every call is decided by "
    "your permission policy and recorded in an audit trail."
)


def is_modern(version: str | None) -> bool:
    return version in MODERN_PROTOCOL_VERSIONS


def request_version(request: Request) -> str | None:
    """The 2026-07-28 per-request version in ``_meta``, if the request carries one."""
    meta = request.params.get("_meta")
    if isinstance(meta, dict):
        version = meta.get(META_VERSION)
        return version if isinstance(version, str) else None
    return None


def check_envelope(request: Request) -> str:
    """Validate a stateless-era request's ``_meta``; return its protocol version."""
    meta = request.params.get("_meta")
    if not isinstance(meta, dict):
        raise JsonRpcError(
            INVALID_PARAMS,
            f'params._meta must be an object carrying "{META_VERSION}"',
            request_id=request.id,
        )
    version = meta.get(META_VERSION)
    if not isinstance(version, str):
        raise JsonRpcError(
            INVALID_PARAMS,
            f'params._meta["{META_VERSION}"] must be a string',
            request_id=request.id,
        )
    if not isinstance(meta.get(META_CAPABILITIES), dict):
        raise JsonRpcError(
            INVALID_PARAMS,
            f'params._meta["{META_CAPABILITIES}"] must be an object',
            request_id=request.id,
        )
    if version not in MODERN_PROTOCOL_VERSIONS:
        raise JsonRpcError(
            UNSUPPORTED_PROTOCOL_VERSION,
            f"unsupported protocol version {version!r}",
            request_id=request.id,
            data={
                "supported": [*MODERN_PROTOCOL_VERSIONS, *HANDSHAKE_PROTOCOL_VERSIONS],
                "requested": version,
            },
        )
    return version


def check_http_headers(request: Request, headers: Mapping[str, str]) -> None:
    """2026-07-28 over HTTP: the routing headers must repeat what the body says."""
    expected = {
        "mcp-protocol-version": request_version(request),
        "mcp-method": request.method,
    }
    if request.method == "tools/call":
        expected["mcp-name"] = request.params.get("name")
    for header, value in expected.items():
        if headers.get(header) != value:
            raise JsonRpcError(
                HEADER_MISMATCH,
                f"{header} header ({headers.get(header)!r}) does not match the body ({value!r})",
                request_id=request.id,
            )


def tools_fingerprint(gateway: Gateway, ctx: AgentContext) -> str:
    """A digest of what the agent's ``tools/list`` shows now: every name and definition."""
    tools = [tool.as_mcp() for tool in gateway.visible_tools(ctx)]
    canonical = json.dumps(tools, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def list_changed_notification(subscription_id: RequestId | None = None) -> dict[str, Any]:
    """``notifications/tools/list_changed``; on a listen stream it names its subscription."""
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": TOOLS_LIST_CHANGED}
    if subscription_id is not None:
        message["params"] = {"_meta": {META_SUBSCRIPTION_ID: subscription_id}}
    return message


class ToolListWatch:
    """Has the agent's tool list changed since the client was last told? Level-triggered: a
    change and its undoing between two looks is no change; two changes are one notification."""

    def __init__(self, gateway: Gateway, ctx: AgentContext, *, known: str | None = None) -> None:
        self.gateway = gateway
        self.ctx = ctx
        self.known = known if known is not None else tools_fingerprint(gateway, ctx)

    def changed(self) -> bool:
        current = tools_fingerprint(self.gateway, self.ctx)
        if current == self.known:
            return False
        self.known = current
        return True


@dataclass(slots=True)
class Subscription:
    """One 2026-07-28 ``subscriptions/listen`` stream. Its id is the request's id, and every
    message on it carries that id in ``_meta``. ``tools`` is None unless the client asked for
    ``toolsListChanged``, the only kind the gateway honours (it has no prompts or resources)."""

    id: RequestId
    tools: ToolListWatch | None

    def acknowledged(self) -> dict[str, Any]:
        """The first message on the stream: what the server will send on it."""
        honored = {"toolsListChanged": True} if self.tools is not None else {}
        return {
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {META_SUBSCRIPTION_ID: self.id}, "notifications": honored},
        }

    def due(self) -> list[dict[str, Any]]:
        """The notifications to send now (none, or one list_changed)."""
        if self.tools is not None and self.tools.changed():
            return [list_changed_notification(self.id)]
        return []

    def closed(self) -> dict[str, Any]:
        """The listen request's result: the server ends the stream gracefully."""
        meta = {META_SUBSCRIPTION_ID: self.id, META_SERVER_INFO: SERVER_INFO}
        return result_response(self.id, {"resultType": "complete", "_meta": meta})


class McpSession:
    """One agent's MCP conversation: a WebSocket connection, or one HTTP session/request."""

    def __init__(
        self,
        gateway: Gateway,
        ctx: AgentContext,
        *,
        transport: str,
        protocol_version: str | None = None,
        notify: Notify | None = None,
    ) -> None:
        self.gateway = gateway
        self.ctx = ctx
        self.transport = transport
        # Sends a server notification on this conversation (progress of a held call); None:
        # the transport has no way to (a plain JSON reply over HTTP).
        self.notify = notify
        self.protocol_version = protocol_version  # fixed by initialize (handshake era)
        # Handshake era: the tool list as of initialize, and whether notifications/initialized
        # came (list_changed is sent only after it).
        self.tools: ToolListWatch | None = None
        self.initialized = False
        # 2026-07-28: the open listen streams of a connection, by request id (WebSocket only:
        # over HTTP each stream is its own request).
        self.subscriptions: dict[RequestId, Subscription] = {}

    def notified(self, notification: Notification) -> bool:
        """Take a client notification; True if it is the handshake era's ``initialized``."""
        if notification.method != "notifications/initialized" or self.tools is None:
            return False
        self.initialized = True
        return True

    def open_listen(self, request: Request) -> Subscription:
        """Validate a ``subscriptions/listen`` request; the caller sends ``acknowledged()``
        first, then registers the subscription (WebSocket) or streams it (HTTP)."""
        try:
            version = self._version_of(request)
            if not is_modern(version):
                raise JsonRpcError(
                    METHOD_NOT_FOUND, f"method not found: {request.method!r}", data=request.method
                )
            notifications = request.params.get("notifications")
            if not isinstance(notifications, dict):
                raise JsonRpcError(
                    INVALID_PARAMS, "subscriptions/listen needs params.notifications (an object)"
                )
        except JsonRpcError as exc:
            exc.request_id = request.id
            raise
        wants_tools = notifications.get("toolsListChanged") is True
        return Subscription(
            id=request.id, tools=ToolListWatch(self.gateway, self.ctx) if wants_tools else None
        )

    def changes(self) -> list[dict[str, Any]]:
        """The notifications due now on this connection, after a governance change."""
        due: list[dict[str, Any]] = []
        if self.initialized and self.tools is not None and self.tools.changed():
            due.append(list_changed_notification())
        for subscription in self.subscriptions.values():
            due += subscription.due()
        return due

    async def handle(self, request: Request) -> dict[str, Any]:
        """Answer one request with a JSON-RPC response; errors become error responses."""
        try:
            version = self._version_of(request)
            result = await self._dispatch(request, version)
        except JsonRpcError as exc:
            exc.request_id = request.id
            return exc.response()
        except CallError as exc:
            return JsonRpcError(
                exc.code, exc.message, request_id=request.id, data=exc.data
            ).response()
        if is_modern(version):
            result = {"resultType": "complete", **result}
            result.setdefault("_meta", {})[META_SERVER_INFO] = SERVER_INFO
        return result_response(request.id, result)

    def _version_of(self, request: Request) -> str:
        if request.method == "initialize":
            if is_modern(self.protocol_version):
                raise JsonRpcError(
                    UNSUPPORTED_PROTOCOL_VERSION,
                    "initialize is not part of protocol 2026-07-28; this connection speaks it",
                    data={"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": "initialize"},
                )
            return self._initialize_version(request)
        if self.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            if request_version(request) is not None:
                raise JsonRpcError(
                    INVALID_REQUEST,
                    "this connection negotiated the handshake era with initialize; "
                    "2026-07-28 requests need a connection of their own",
                )
            return self.protocol_version
        if "_meta" in request.params or is_modern(self.protocol_version):
            version = check_envelope(request)
            self.protocol_version = version
            return version
        raise JsonRpcError(
            INVALID_REQUEST,
            "send initialize first (handshake era), or carry "
            f'params._meta["{META_VERSION}"] (protocol 2026-07-28)',
        )

    def _initialize_version(self, request: Request) -> str:
        offered = request.params.get("protocolVersion")
        if not isinstance(offered, str):
            raise JsonRpcError(INVALID_PARAMS, "initialize needs params.protocolVersion (a string)")
        return offered if offered in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION

    async def _dispatch(self, request: Request, version: str) -> dict[str, Any]:
        method = request.method
        if method == "initialize":
            self.protocol_version = version
            self.tools = ToolListWatch(self.gateway, self.ctx)
            return {
                "protocolVersion": version,
                "capabilities": CAPABILITIES,
                "serverInfo": SERVER_INFO,
                "instructions": INSTRUCTIONS,
            }
        if method == "tools/list":
            return self._tools_list(request, version)
        if method == "tools/call":
            return await self._tools_call(request, version)
        if method == "ping" and not is_modern(version):
            return {}
        if method == "server/discover" and is_modern(version):
            return {
                "supportedVersions": [*MODERN_PROTOCOL_VERSIONS, *HANDSHAKE_PROTOCOL_VERSIONS],
                "capabilities": CAPABILITIES,
                "instructions": INSTRUCTIONS,
                "ttlMs": 0,
                "cacheScope": "public",
            }
        raise JsonRpcError(METHOD_NOT_FOUND, f"method not found: {method!r}", data=method)

    def _tools_list(self, request: Request, version: str) -> dict[str, Any]:
        tools = self.gateway.visible_tools(self.ctx)
        cursor = request.params.get("cursor")
        if cursor is not None:
            after = _decode_cursor(cursor)
            tools = [t for t in tools if t.exposed_name > after]
        page_size = self.gateway.page_size
        page = tools[:page_size]
        result: dict[str, Any] = {"tools": [t.as_mcp() for t in page]}
        if len(tools) > page_size:
            result["nextCursor"] = _encode_cursor(page[-1].exposed_name)
        if is_modern(version):
            # Grants change at any time: clients must not serve the list from a cache.
            result.update(ttlMs=0, cacheScope="private")
        return result

    async def _tools_call(self, request: Request, version: str) -> dict[str, Any]:
        name = request.params.get("name")
        if not isinstance(name, str) or not name:
            raise JsonRpcError(INVALID_PARAMS, "tools/call needs params.name (a string)")
        if len(name) > MAX_TOOL_NAME:
            raise JsonRpcError(
                INVALID_PARAMS, f"tools/call params.name is longer than {MAX_TOOL_NAME} characters"
            )
        arguments = request.params.get("arguments", {})
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, dict):
            raise JsonRpcError(INVALID_PARAMS, "tools/call params.arguments must be an object")
        meta = CallMeta(
            transport=self.transport,
            protocol_version=version,
            request_id=str(request.id),
            progress=self._progress(progress_token(request)),
        )
        return await self.gateway.call_tool(self.ctx, meta, name=name, arguments=arguments)

    def _progress(self, token: RequestId | None) -> Progress | None:
        """``notifications/progress`` for the request that carried ``token``, if the transport
        can send it."""
        notify = self.notify
        if token is None or notify is None:
            return None

        async def progress(done: float, total: float | None, message: str) -> None:
            params: dict[str, Any] = {"progressToken": token, "progress": done}
            if total is not None:
                params["total"] = total
            params["message"] = message
            await notify({"jsonrpc": "2.0", "method": PROGRESS, "params": params})

        return progress


def progress_token(request: Request) -> RequestId | None:
    """The ``params._meta.progressToken`` a request carries: the client asks for progress."""
    meta = request.params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    valid = isinstance(token, str | int) and not isinstance(token, bool)
    return token if valid else None


def cancelled_request_id(notification: Notification) -> Any:
    """The request a ``notifications/cancelled`` names, or None for any other notification."""
    if notification.method != "notifications/cancelled":
        return None
    return notification.params.get("requestId")


def _encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode()


def _decode_cursor(cursor: Any) -> str:
    try:
        return base64.b64decode(str(cursor).encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise JsonRpcError(INVALID_PARAMS, f"invalid cursor: {cursor!r}") from None
