"""Tool servers and the tool catalog discovered from them, and rug-pull protection: each
tool's description and schemas are pinned when approved, and a tool whose upstream changes
them is quarantined (hidden from agents, its calls refused) until an admin approves again.

Trust on first listing: the first listing of a server (``toolserver_add``, an admin's act, or
the first connection after it) approves every tool it lists, except one whose description
carries injection markers. After that, a new tool, or a changed description or schema, waits
for an admin. A quarantined tool whose upstream goes back to exactly the approved version is
approved again: it is what was approved.

What agents may call is recorded in the tenant's audit chain: an admin's approval, and the
catalog's own changes of it (a tool pinned on first listing, quarantined, reinstated or gone;
by the ``gateway``, or whoever made the first listing). A quarantined tool that changes again,
or a change of title or annotations only, changes nothing agents may call: not recorded.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import unicodedata
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from governance.engine.guardrails.injection import description_findings
from governance.engine.types import exposed_tool_name
from governance.models import Alert, Tenant, Tool, ToolServer
from governance.services.changes import (
    GATEWAY,
    SYSTEM,
    change_record,
    object_snapshot,
    removals_prepare,
    removals_record,
)
from governance.services.versions import tenant_version_bump

FIRST_LISTING = "first listing"  # approved_by of the tools a server's first listing pinned
REVERTED = "upstream reverted to the approved version"  # resolved_by of their alerts
_REASON_MAX = Tool._meta.get_field("quarantine_reason").max_length or 300
_TITLE_MAX = Alert._meta.get_field("title").max_length or 300
_DIFF_MAX = 20_000  # characters of the diff an alert keeps; the tool page shows all of it
# Schema keys whose strings a model reads as prose: scanned like the description.
_PROSE_KEYS = frozenset({"description", "title", "default", "examples", "enum", "const"})


class ToolChangedError(ValueError):
    """The tool changed after the reviewer looked at it: nothing was approved."""


def tool_view(tool: dict[str, Any]) -> dict[str, Any]:
    """What is pinned of a listed tool (an MCP tool dict): what an agent or a model reads of
    it, besides its title and annotations."""
    return {
        "name": tool.get("name"),
        "description": tool.get("description") or "",
        "inputSchema": tool.get("inputSchema") or {},
        "outputSchema": tool.get("outputSchema"),
    }


def tool_fingerprint(tool: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of what an agent (or a model) reads of the tool."""
    canonical = json.dumps(
        tool_view(tool), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _current_view(tool: Tool) -> dict[str, Any]:
    """A stored tool as it is now, in the shape of ``tool_view``."""
    return {
        "name": tool.name,
        "description": tool.description,
        "inputSchema": tool.input_schema,
        "outputSchema": tool.output_schema,
    }


def tool_findings(view: dict[str, Any]) -> list[dict[str, Any]]:
    """Injection markers in a tool's description and in the prose of its schemas (parameter
    descriptions poison a model as well as the tool's own), each with ``path`` naming where."""
    records = []
    for where, text in _prose(view):
        for finding in description_findings(text):
            records.append({**finding.as_record(), "path": where})
    return records


def _prose(view: dict[str, Any]) -> Iterator[tuple[str, str]]:
    yield "description", view.get("description") or ""
    for key in ("inputSchema", "outputSchema"):
        yield from _schema_prose(view.get(key), key, prose=False)


def _schema_prose(node: Any, where: str, *, prose: bool) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        if prose:
            yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _schema_prose(value, f"{where}.{key}", prose=key in _PROSE_KEYS)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schema_prose(value, f"{where}[{i}]", prose=prose)


def _kinds(findings: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({str(f.get("kind")) for f in findings}))


@transaction.atomic
def toolserver_add(
    *,
    tenant: Tenant,
    name: str,
    command: str = "",
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    url: str = "",
    headers: dict[str, str] | None = None,
    actor: str = SYSTEM,
) -> ToolServer:
    if bool(command) == bool(url):
        raise ValueError("a tool server needs exactly one of a command (stdio) or a URL (HTTP)")
    server = ToolServer(
        tenant=tenant,
        name=name,
        transport=ToolServer.Transport.STDIO if command else ToolServer.Transport.HTTP,
        command=command,
        args=args or [],
        env=env or {},
        url=url,
        headers=headers or {},
    )
    server.full_clean()
    server.save()
    tenant_version_bump(tenant_id=tenant.id)
    change_record(actor=actor, action="created", obj=server, before=None)
    return server


@transaction.atomic
def tool_catalog_sync(*, server_id: int, tools: list[dict[str, Any]], actor: str = GATEWAY) -> bool:
    """Store the tools a server listed (MCP tool dicts), called at every (re)connection and
    mid-session re-listing; True when the catalog, or a tool's status, changed.

    The server's first listing pins its tools (see the module's docstring); later, a new
    tool or a changed description or schema is quarantined with one alert for reviewers,
    and a quarantined tool listed again exactly as approved is approved again."""
    server = ToolServer.objects.select_for_update().get(id=server_id)
    first_listing = server.catalog_synced_at is None
    known = {tool.name: tool for tool in server.tools.all()}
    now = timezone.now()
    changed = False
    for listed in tools:
        view = tool_view(listed)
        fields = {
            "title": listed.get("title") or "",
            "description": listed.get("description") or "",
            "input_schema": listed.get("inputSchema") or {"type": "object"},
            "output_schema": listed.get("outputSchema"),
            "annotations": listed.get("annotations"),
            "fingerprint": tool_fingerprint(listed),
        }
        tool = known.pop(listed["name"], None)
        if tool is None:
            tool = Tool(server=server, name=listed["name"], **fields)
            tool.findings = tool_findings(view)
            if first_listing and not tool.findings:
                _pin(tool, view=view, by=FIRST_LISTING, now=now)
                tool.save()
                action = "approved"
            else:
                _quarantine(tool, reason=_reason(tool, first_listing=first_listing), now=now)
                action = "quarantined"
            change_record(actor=actor, action=action, obj=tool, before=None)
            changed = True
            continue
        if all(getattr(tool, key) == value for key, value in fields.items()):
            continue
        redescribed = tool.fingerprint != fields["fingerprint"]
        before = object_snapshot(tool)
        for key, value in fields.items():
            setattr(tool, key, value)
        changed = True
        if not redescribed:  # title or annotations only: not pinned
            tool.save()
            continue
        tool.findings = tool_findings(view)
        if tool.fingerprint == tool.pinned_fingerprint:
            _reinstate(tool, now=now)
            change_record(actor=actor, action="reinstated", obj=tool, before=before)
        elif tool.status == Tool.Status.APPROVED:
            _quarantine(tool, reason=_reason(tool, first_listing=False), now=now)
            change_record(actor=actor, action="quarantined", obj=tool, before=before)
        else:  # quarantined and changed again: still waiting, one alert is enough
            tool.quarantine_reason = _reason(tool, first_listing=False)
            tool.save()
    if known:
        gone = sorted(known.values(), key=lambda tool: tool.id)
        removals = removals_prepare(gone)
        Tool.objects.filter(id__in=[tool.id for tool in gone]).delete()
        removals_record(removals, actor=actor, action="removed")
        changed = True
    server.catalog_synced_at = now
    server.save(update_fields=["catalog_synced_at"])
    if changed:
        tenant_version_bump(tenant_id=server.tenant_id)
    return changed


def _pin(tool: Tool, *, view: dict[str, Any], by: str, now: datetime) -> None:
    tool.pinned, tool.pinned_fingerprint = view, tool.fingerprint
    tool.status, tool.quarantine_reason = Tool.Status.APPROVED, ""
    tool.approved_at, tool.approved_by = now, by[:150]


def _reason(tool: Tool, *, first_listing: bool) -> str:
    if tool.pinned_fingerprint:
        when = (
            f"on {tool.approved_at:%Y-%m-%d %H:%M} UTC"
            if tool.approved_at
            else f"by {tool.approved_by or 'someone'}"
        )
        parts = [f"description or schema changed since it was approved {when}"]
    elif first_listing:
        parts = []  # the markers are the only reason
    else:
        parts = ["new tool, not yet approved"]
    if tool.findings:
        parts.append(f"description has injection markers: {_kinds(tool.findings)}")
    return "; ".join(parts)[:_REASON_MAX]


def _quarantine(tool: Tool, *, reason: str, now: datetime) -> None:
    """Hide and refuse the tool until approved, and tell reviewers once."""
    tool.status, tool.quarantine_reason = Tool.Status.QUARANTINED, reason
    tool.save()
    exposed = exposed_tool_name(tool.server.name, tool.name)
    diff = tool_pin_diff(tool)
    Alert.objects.create(
        tenant_id=tool.server.tenant_id,
        kind=Alert.Kind.TOOL_QUARANTINED,
        tool=tool,
        title=f"Tool {exposed} quarantined: {reason}"[:_TITLE_MAX],
        detail={
            "server": tool.server.name,
            "tool": exposed,
            "reason": reason,
            "quarantined_at": now.isoformat(),
            "findings": tool.findings,
            "diff": diff[:_DIFF_MAX],
            "diff_truncated": len(diff) > _DIFF_MAX,
            "fingerprint": tool.fingerprint,
            "pinned_fingerprint": tool.pinned_fingerprint,
        },
    )


def _reinstate(tool: Tool, *, now: datetime) -> None:
    """The upstream lists the approved version again: approve it, close its alerts."""
    tool.status, tool.quarantine_reason = Tool.Status.APPROVED, ""
    tool.save()
    _alerts_resolve(tool, by=REVERTED, now=now)


def _alerts_resolve(tool: Tool, *, by: str, now: datetime) -> None:
    Alert.objects.filter(
        tool=tool, kind=Alert.Kind.TOOL_QUARANTINED, resolved_at__isnull=True
    ).update(resolved_at=now, resolved_by=by[:150])


@transaction.atomic
def tool_approve(*, tool: Tool, actor: str, fingerprint: str | None = None) -> Tool:
    """Pin the tool as it is now and let agents see and call it; its open quarantine alerts
    are resolved. With ``fingerprint`` (the version the reviewer looked at), refuse with
    ToolChangedError if the upstream changed it since. The description is scanned again and
    its findings stored: approving a tool with findings is the admin's call. ``actor`` is
    who approved it (the tool's ``approved_by``)."""
    tool = Tool.objects.select_for_update().select_related("server").get(id=tool.id)
    if fingerprint is not None and fingerprint != tool.fingerprint:
        raise ToolChangedError(
            f"{tool} changed since it was shown to you; look at the new version first"
        )
    if tool.status == Tool.Status.APPROVED and tool.pinned_fingerprint == tool.fingerprint:
        return tool  # approved as it is already
    now = timezone.now()
    before = object_snapshot(tool)
    view = _current_view(tool)
    tool.findings = tool_findings(view)
    _pin(tool, view=view, by=actor, now=now)
    tool.save()
    _alerts_resolve(tool, by=actor, now=now)
    tenant_version_bump(tenant_id=tool.server.tenant_id)
    change_record(actor=actor, action="approved", obj=tool, before=before)
    return tool


@transaction.atomic
def alerts_resolve(*, alerts: Iterable[Alert], actor: str) -> int:
    """Mark open alerts resolved by ``actor``: how many were. Bookkeeping for reviewers (no
    version bump), recorded all the same: who closed which alert."""
    ids = [alert.id for alert in alerts]
    now, resolved = timezone.now(), 0
    open_alerts = Alert.objects.select_for_update().filter(id__in=ids, resolved_at__isnull=True)
    for alert in open_alerts.order_by("id"):
        before = object_snapshot(alert)
        alert.resolved_at, alert.resolved_by = now, actor[:150]
        alert.save(update_fields=["resolved_at", "resolved_by"])
        change_record(actor=actor, action="resolved", obj=alert, before=before)
        resolved += 1
    return resolved


def tool_pin_diff(tool: Tool) -> str:
    """A unified diff from the approved version to the current one, as pretty JSON; "" when
    they are the same. Invisible characters are shown escaped."""
    approved = _pretty(tool.pinned) if tool.pinned is not None else ""
    current = _pretty(_current_view(tool))
    if approved == current:
        return ""
    return "".join(
        difflib.unified_diff(
            approved.splitlines(keepends=True),
            current.splitlines(keepends=True),
            fromfile="approved" if tool.pinned is not None else "approved (nothing yet)",
            tofile="current",
        )
    )


def _pretty(view: dict[str, Any]) -> str:
    text = json.dumps(view, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return "".join(_visible(c) for c in text)


def _visible(char: str) -> str:
    """A character as a reviewer should see it: format, control, private-use, unassigned and
    unusual space characters (zero-width, bidi, tags) escaped; newlines and spaces kept."""
    if char in "\n " or unicodedata.category(char)[0] not in "CZ":
        return char
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
