"""Rate limits and quotas as plain data: which limits count a call, under which key.

The counters themselves live in ``orchestrator/ratelimit.py`` (in-process, or Redis when
configured); this module decides only what is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One stored RateLimit row. ``scope`` is what one counter covers: tenant | agent |
    tool | agent_tool. ``agent_id`` and ``tool`` (a glob) narrow which calls it counts."""

    id: int
    tenant_id: int
    scope: str = "agent"
    agent_id: int | None = None
    tool: str = ""
    calls: int | None = None  # per window_seconds
    window_seconds: int | None = None
    concurrent: int | None = None  # in flight at once
    description: str = ""

    def matches(self, agent_id: int, tool: str) -> bool:
        return (self.agent_id is None or self.agent_id == agent_id) and (
            not self.tool or fnmatchcase(tool, self.tool)
        )

    def key(self, agent_id: int, tool: str) -> str:
        """The counter this call counts in: ``rl:<tenant>:<limit>:<scope value>``."""
        subject = {
            "tenant": "",
            "agent": f"a{agent_id}",
            "tool": f"t{tool}",
            "agent_tool": f"a{agent_id}:t{tool}",
        }[self.scope]
        return f"rl:{self.tenant_id}:{self.id}:{subject}"

    def describe(self) -> str:
        parts = []
        if self.calls:
            parts.append(f"{self.calls} calls per {self.window_seconds} s")
        if self.concurrent:
            parts.append(f"{self.concurrent} at once")
        per = {"tenant": "for the tenant", "agent_tool": "per agent and tool"}.get(
            self.scope, f"per {self.scope}"
        )
        return f"{' and '.join(parts)} {per}"
