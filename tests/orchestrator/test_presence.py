"""Presence: a gateway writes an agent's last_seen_at as soon as it first sees it (a request,
a WebSocket), then once a round (AGENT_PRESENCE_SECONDS) while it stays connected or busy."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async

from governance.models import Agent
from governance.services.agents import agent_create, tenant_create, token_issue
from orchestrator.gateway import Gateway

pytestmark = pytest.mark.django_db(transaction=True)


def setup() -> str:
    agent = agent_create(tenant=tenant_create(slug="acme"), name="alice")
    return token_issue(agent=agent).token


async def last_seen():
    return (await Agent.objects.aget(name="alice")).last_seen_at


async def changed_from(before, within: float):
    async with asyncio.timeout(within):
        while (now := await last_seen()) == before:
            await asyncio.sleep(0.02)
    return now


async def test_presence_is_written_at_once_then_once_a_round(settings):
    settings.AGENT_PRESENCE_SECONDS = 30
    token = await sync_to_async(setup)()
    gateway = Gateway()
    await gateway.start()
    try:
        assert await last_seen() is None
        ctx = gateway.authenticate(token)  # an HTTP request, say
        first = await changed_from(None, within=2)  # the next poll, not the 30 s round
        for _ in range(10):  # busy, within the round: no write per request or per poll
            gateway.authenticate(token)
            await asyncio.sleep(0.05)
        assert await last_seen() == first
        # Rounds every 0.5 s from now on: connected but silent, it is still seen each round.
        settings.AGENT_PRESENCE_SECONDS = 0.5
        gateway.connected(ctx, +1)
        second = await changed_from(first, within=2)
        third = await changed_from(second, within=2)
        assert first < second < third
        gateway.connected(ctx, -1)
        await asyncio.sleep(1.2)  # gone: at most the round already due, then nothing
        settled = await last_seen()
        await asyncio.sleep(1.2)
        assert await last_seen() == settled
    finally:
        await gateway.close()
