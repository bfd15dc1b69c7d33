"""Tool servers and the tool catalog discovered from them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import transaction
from django.utils import timezone

from governance.models import Tenant, Tool, ToolServer
from governance.services.versions import tenant_version_bump


def tool_fingerprint(tool: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of what an agent (or a model) reads of the tool."""
    pinned = {
        "name": tool.get("name"),
        "description": tool.get("description") or "",
        "inputSchema": tool.get("inputSchema") or {},
        "outputSchema": tool.get("outputSchema"),
    }
    canonical = json.dumps(pinned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    return server


@transaction.atomic
def tool_catalog_sync(*, server_id: int, tools: list[dict[str, Any]]) -> bool:
    """Store the tools a server listed (MCP tool dicts); True when the catalog changed."""
    server = ToolServer.objects.select_for_update().get(id=server_id)
    known = {tool.name: tool for tool in server.tools.all()}
    changed = False
    for listed in tools:
        fingerprint = tool_fingerprint(listed)
        fields = {
            "title": listed.get("title") or "",
            "description": listed.get("description") or "",
            "input_schema": listed.get("inputSchema") or {"type": "object"},
            "output_schema": listed.get("outputSchema"),
            "annotations": listed.get("annotations"),
            "fingerprint": fingerprint,
        }
        existing = known.pop(listed["name"], None)
        if existing is None:
            Tool.objects.create(server=server, name=listed["name"], **fields)
            changed = True
        elif existing.fingerprint != fingerprint or existing.title != fields["title"]:
            for key, value in fields.items():
                setattr(existing, key, value)
            existing.save()
            changed = True
    if known:
        Tool.objects.filter(id__in=[tool.id for tool in known.values()]).delete()
        changed = True
    server.catalog_synced_at = timezone.now()
    server.save(update_fields=["catalog_synced_at"])
    if changed:
        tenant_version_bump(tenant_id=server.tenant_id)
    return changed
