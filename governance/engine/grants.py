"""The minimal permission check: default deny, allow what a grant's glob matches.

``decide`` is the seam the policy engine replaces: same inputs, same ``Decision`` out.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase

from governance.engine.types import Decision, GrantRule

DEFAULT_DENY = Decision(allowed=False, reason="no grant allows this tool for this agent")


def decide(grants: Iterable[GrantRule], *, agent_id: int, tool: str) -> Decision:
    for grant in grants:
        if (grant.agent_id is None or grant.agent_id == agent_id) and fnmatchcase(
            tool, grant.tool_glob
        ):
            return Decision(
                allowed=True, reason=f"granted by {grant.tool_glob!r}", rule=f"grant:{grant.id}"
            )
    return DEFAULT_DENY
