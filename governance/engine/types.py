"""Plain data the gateway decides over: a per-tenant snapshot of governance state.

No Django, no I/O: built by ``governance.selectors`` from the database, read on the hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from governance.engine.guardrails.pipeline import TenantGuardrails
from governance.engine.limits import LimitSpec
from governance.engine.policy import TenantPolicy

TOOL_SEPARATOR = "__"
_INVALID_TOOL_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def exposed_tool_name(server: str, tool: str) -> str:
    """The namespaced name agents see: ``time__get_current_time``; always ``[A-Za-z0-9_-]``."""
    return f"{server}{TOOL_SEPARATOR}{_INVALID_TOOL_CHARS.sub('_', tool)}"


@dataclass(frozen=True, slots=True)
class AgentEntry:
    id: int
    name: str
    is_active: bool


@dataclass(frozen=True, slots=True)
class TokenEntry:
    id: int
    tenant_id: int
    agent_id: int
    expires_at: datetime | None
    revoked: bool

    def problem(self, *, now: datetime) -> str | None:
        """Why this token may not be used now, or None when it may."""
        return token_problem(revoked=self.revoked, expires_at=self.expires_at, now=now)


def token_problem(*, revoked: bool, expires_at: datetime | None, now: datetime) -> str | None:
    """Why a token may not be used at ``now`` (``token revoked``, ``token expired``), or None."""
    if revoked:
        return "token revoked"
    if expires_at is not None and expires_at <= now:
        return "token expired"
    return None


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """How to reach one upstream tool server; a changed spec means a new upstream session."""

    id: int
    tenant_id: int
    name: str
    transport: str  # "stdio" | "http"
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ToolEntry:
    server_id: int
    server_name: str
    name: str  # as the upstream knows it
    exposed_name: str  # as agents see it
    title: str
    description: str
    input_schema: dict[str, Any]
    output_schema: dict[str, Any] | None
    annotations: dict[str, Any] | None

    def as_mcp(self) -> dict[str, Any]:
        """The tool as a tools/list entry."""
        tool: dict[str, Any] = {
            "name": self.exposed_name,
            "description": self.description,
            "inputSchema": self.input_schema,
        }
        if self.title:
            tool["title"] = self.title
        if self.output_schema is not None:
            tool["outputSchema"] = self.output_schema
        if self.annotations:
            tool["annotations"] = self.annotations
        return tool


@dataclass(frozen=True, slots=True)
class TenantState:
    id: int
    slug: str
    version: int
    agents: dict[int, AgentEntry] = field(default_factory=dict)
    tokens: dict[str, TokenEntry] = field(default_factory=dict)  # by SHA-256 hex digest
    servers: dict[int, ServerSpec] = field(default_factory=dict)
    tools: dict[str, ToolEntry] = field(default_factory=dict)  # by exposed name, sorted
    # Tools held back until an admin approves them (rug-pull pinning): exposed name → reason.
    quarantined: dict[str, str] = field(default_factory=dict)
    guardrails: TenantGuardrails = field(default_factory=TenantGuardrails)
    rate_limits: tuple[LimitSpec, ...] = ()
    policy: TenantPolicy = field(default_factory=TenantPolicy)
    denial_detail: str = "rule"  # minimal | rule | full: what a denied agent is told
    approval_timeout_seconds: float = 900.0  # how long a call waits for a reviewer
