"""A policy change reaches the gateway's in-memory state: by the channel-layer nudge at once,
and by the poll of the persisted version when the nudge is lost."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from governance.services.agents import agent_create, tenant_create, token_issue
from governance.services.policy import rule_create
from governance.services.toolservers import tool_catalog_sync, toolserver_add
from orchestrator.gateway import Gateway

pytestmark = pytest.mark.django_db(transaction=True)


def setup() -> str:
    tenant = tenant_create(slug="acme")
    agent = agent_create(tenant=tenant, name="alice")
    server = toolserver_add(tenant=tenant, name="files", command="never-started")
    tool_catalog_sync(
        server_id=server.id,
        tools=[{"name": "read", "description": "", "inputSchema": {"type": "object"}}],
    )
    return token_issue(agent=agent).token


def allow_read() -> None:
    from governance.models import Tenant

    rule_create(tenant=Tenant.objects.get(slug="acme"), effect="allow", resource="files__read")


async def visible_after_change(gateway: Gateway, change) -> float:
    """Seconds from the change's commit until the agent sees files__read."""
    token = await sync_to_async(setup)()
    await gateway.refresh()
    ctx = gateway.authenticate(token)
    assert gateway.visible_tools(ctx) == []
    loop = asyncio.get_running_loop()
    await sync_to_async(change)()
    start = loop.time()
    async with asyncio.timeout(5):
        while not gateway.visible_tools(ctx):
            await asyncio.sleep(0.01)
    return loop.time() - start


async def test_the_nudge_applies_a_change_before_the_next_poll(settings):
    settings.GOVERNANCE_POLL_SECONDS = 30  # the poll cannot be what applies it
    gateway = Gateway()
    await gateway.start()
    try:
        # Well under the 30 s poll; not a latency claim (the e2e tests hold the 1 s one).
        assert await visible_after_change(gateway, allow_read) < 5
    finally:
        await gateway.close()


async def test_the_poll_applies_a_change_whose_nudge_was_lost(settings, monkeypatch):
    settings.GOVERNANCE_POLL_SECONDS = 0.2
    monkeypatch.setattr("governance.services.versions.governance_nudge", lambda **_: None)
    gateway = Gateway()
    await gateway.start()
    try:
        assert await visible_after_change(gateway, allow_read) < 5
    finally:
        await gateway.close()


async def test_listeners_hear_when_a_rule_window_opens(settings):
    """No write happens when a window opens, yet what the agent may see changes: the gateway
    tells the tenant's connections (which then send list_changed)."""
    settings.GOVERNANCE_POLL_SECONDS = 0.05
    gateway = Gateway()
    await gateway.start()
    try:
        token = await sync_to_async(setup)()
        opens = timezone.now() + timedelta(seconds=0.5)

        def allow_read_later() -> None:
            from governance.models import Tenant

            tenant = Tenant.objects.get(slug="acme")
            rule_create(tenant=tenant, effect="allow", resource="files__read", valid_from=opens)

        await sync_to_async(allow_read_later)()
        await gateway.refresh()
        ctx = gateway.authenticate(token)
        heard = asyncio.Event()
        gateway.subscribe(ctx.tenant_id, heard.set)
        assert gateway.visible_tools(ctx) == []
        async with asyncio.timeout(3):
            await heard.wait()
        assert timezone.now() >= opens
        assert [t.exposed_name for t in gateway.visible_tools(ctx)] == ["files__read"]
    finally:
        await gateway.close()
