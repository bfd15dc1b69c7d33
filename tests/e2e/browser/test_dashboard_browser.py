"""The compliance dashboard in a real browser (chromium via Playwright) against a live gateway:
a reviewer logs in, watches an agent's call arrive in the feed without reloading, and approves
or denies a call the gateway holds while the agent — the official mcp SDK client — waits; a
reviewer of another tenant sees nothing of it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client, MCPError
from mcp.types import CallToolResult
from playwright.async_api import Browser, Locator, Page, Response, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.e2e.browser.conftest import PASSWORDS, TIMEOUT_MS, Snap
from tests.e2e.conftest import Gateway, admin_create, mcp_client

pytestmark = pytest.mark.e2e

ACME_TRACES = ("alice", "time__get_current_time", "time__convert_time", "acme")
CONVERT = {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}
# Keeps the EventSources a page opens, so a test can wait until the page's live stream (SSE)
# is connected before it makes the call the page must show.
TRACK_EVENT_SOURCES = """
(() => {
  const Native = window.EventSource;
  if (!Native) return;
  window.__eventSources = [];
  window.EventSource = class extends Native {
    constructor(...args) { super(...args); window.__eventSources.push(this); }
  };
})();
"""


async def login(page: Page, username: str, password: str) -> Response:
    """Submit the login form; the response of the page it leads to (after redirects)."""
    await page.goto("/accounts/login/")
    await page.fill('input[name="username"]', username)
    await page.fill('input[name="password"]', password)
    async with page.expect_navigation() as navigation:
        await page.locator('form:has(input[name="password"]) button[type="submit"]').click()
    response = await navigation.value
    assert response is not None
    return response


async def login_reviewer(page: Page, username: str, slug: str) -> None:
    """Log in; the dashboard takes a reviewer of one tenant to that tenant's pages."""
    response = await login(page, username, PASSWORDS[username])
    assert re.search(f"/dashboard/{slug}/", page.url), f"logged in, landed on {page.url}"
    assert response.status == 200, f"logged in, {page.url}: HTTP {response.status}"


async def open_live(page: Page, path: str) -> None:
    """Open ``path``, wait until its live stream is connected, and mark the document so
    ``assert_not_reloaded`` can tell it is still the same one."""
    await page.add_init_script(TRACK_EVENT_SOURCES)
    response = await page.goto(path)
    assert response is not None
    assert response.status == 200, f"{path}: HTTP {response.status}"
    try:
        await page.wait_for_function(
            "() => (window.__eventSources || []).some(s => s.readyState === 1)",
            timeout=TIMEOUT_MS,
        )
    except PlaywrightTimeout:
        pytest.fail(f"{path} opened no server-sent event stream within {TIMEOUT_MS} ms")
    await page.evaluate("window.__sameDocument = true")


async def assert_not_reloaded(page: Page, url: str) -> None:
    assert page.url == url, f"the page navigated to {page.url}"
    assert await page.evaluate("window.__sameDocument === true"), "the page was reloaded"


def canonical(call_id: str) -> str:
    return str(uuid.UUID(call_id))


def approval_ids(gw: Gateway) -> set[str]:
    return {canonical(row["id"]) for row in gw.query("SELECT id FROM governance_approvalrequest")}


async def held_approval(gw: Gateway, call: asyncio.Task[Any], known: set[str]) -> str:
    """The id of the pending approval request the gateway stored for ``call`` (the one not in
    ``known``); fails with what the client got if the gateway answered instead of holding."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        rows = gw.query("SELECT id, tool, status FROM governance_approvalrequest")
        new = [row for row in rows if canonical(row["id"]) not in known]
        if new:
            assert len(new) == 1, new
            assert (new[0]["tool"], new[0]["status"]) == ("time__convert_time", "pending"), new
            return canonical(new[0]["id"])
        if call.done():
            outcome = call.exception() or call.result()
            pytest.fail(f"the gateway answered instead of holding the call: {outcome!r}")
        await asyncio.sleep(0.05)  # polling the database, not waiting out a race
    pytest.fail(f"no approval request stored for the held call within {TIMEOUT_MS} ms")


@contextlib.asynccontextmanager
async def held_call(
    client: Client, tool: str, arguments: dict[str, Any], progress: list[float]
) -> AsyncIterator[asyncio.Task[CallToolResult]]:
    """``client.call_tool`` running as a task (it waits for the reviewer), collecting the
    progress notifications the gateway sends meanwhile; cancelled if the test leaves before
    it ended."""

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    call = asyncio.create_task(
        client.call_tool(tool, arguments, read_timeout_seconds=60, progress_callback=on_progress)
    )
    try:
        yield call
    finally:
        if not call.done():
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call


async def test_the_browser_and_the_live_server_work_together(
    browser: Browser, dashboard_gateway: Gateway, snap: Snap
) -> None:
    """The infrastructure itself: chromium logs in to Django admin on the live server."""
    admin_create(dashboard_gateway, "root", "root-browser-pw-1")
    context = await browser.new_context(base_url=dashboard_gateway.base)
    page = await context.new_page()
    await page.goto("/admin/login/")
    await page.fill('input[name="username"]', "root")
    await page.fill('input[name="password"]', "root-browser-pw-1")
    await page.locator('input[type="submit"], button[type="submit"]').first.click()
    await page.wait_for_url(re.compile(r"/admin/$"))
    await expect(page.locator("#site-name")).to_be_visible(timeout=TIMEOUT_MS)
    await snap(page, "admin-logged-in")
    await context.close()


async def test_a_reviewer_logs_in_after_a_wrong_password(page: Page, snap: Snap) -> None:
    refused = await login(page, "rita", "not-her-password")
    assert refused.status == 200, refused.status
    error = page.get_by_role("alert").or_(
        page.get_by_text(re.compile(r"did not match|correct username|invalid|incorrect", re.I))
    )
    await expect(error.first).to_be_visible(timeout=TIMEOUT_MS)
    assert "/accounts/login/" in page.url
    await snap(page, "wrong-password")

    await login_reviewer(page, "rita", "acme")
    await expect(page.get_by_role("alert")).to_have_count(0)
    await snap(page, "logged-in")


async def test_the_feed_shows_a_new_call_without_reloading(
    page: Page, snap: Snap, dashboard_gateway: Gateway
) -> None:
    gw = dashboard_gateway
    await login_reviewer(page, "rita", "acme")
    await open_live(page, "/dashboard/acme/feed")
    await expect(page.locator("#feed")).to_be_visible(timeout=TIMEOUT_MS)
    url = page.url
    await snap(page, "feed-before")
    last = gw.query("SELECT coalesce(max(id), 0) AS id FROM audit_auditrecord")[0]["id"]

    async with mcp_client(gw, gw.tokens["alice"]) as client:
        result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
    assert not result.is_error, result
    rows = gw.wait_for_audit("id > ? AND tool = ?", (last, "time__get_current_time"), 1)
    call_id = canonical(rows[0]["call_id"])

    row = page.locator(f'#feed tr[data-call-id="{call_id}"]').first
    await expect(row).to_be_visible(timeout=TIMEOUT_MS)
    await expect(row).to_contain_text("time__get_current_time")
    await assert_not_reloaded(page, url)
    await snap(page, "feed-with-live-call")


@contextlib.asynccontextmanager
async def shown_while_held(
    page: Page, gw: Gateway, progress: list[float]
) -> AsyncIterator[tuple[Locator, asyncio.Task[CallToolResult]]]:
    """Rita's approvals page, open and live; alice's time__convert_time held by the gateway;
    its request shown on the page without a reload. Yields the request's element and the
    agent's waiting call."""
    await login_reviewer(page, "rita", "acme")
    await open_live(page, "/dashboard/acme/approvals")
    await expect(page.locator("#approvals")).to_be_visible(timeout=TIMEOUT_MS)
    url = page.url
    known = approval_ids(gw)
    async with (
        mcp_client(gw, gw.tokens["alice"], transport="ws") as client,
        held_call(client, "time__convert_time", CONVERT, progress) as call,
    ):
        approval_id = await held_approval(gw, call, known)
        item = page.locator(f'#approvals [data-approval-id="{approval_id}"]')
        await expect(item).to_be_visible(timeout=TIMEOUT_MS)
        await expect(item).to_contain_text("convert_time")
        await assert_not_reloaded(page, url)
        yield item, call


async def test_a_reviewer_approves_a_held_call_and_the_agent_gets_the_result(
    page: Page, snap: Snap, dashboard_gateway: Gateway
) -> None:
    progress: list[float] = []
    async with shown_while_held(page, dashboard_gateway, progress) as (item, call):
        assert not call.done(), "the agent was answered before anyone decided"
        await snap(page, "approval-pending")
        # While it waits, the agent hears that its call is still pending
        # (APPROVAL_PROGRESS_SECONDS=0.5).
        deadline = time.monotonic() + 5
        while not progress and time.monotonic() < deadline and not call.done():
            await asyncio.sleep(0.05)
        assert progress, "no progress notification reached the waiting agent within 5 s"

        await item.locator('textarea[name="comment"]').fill("fine, it is only a clock")
        await item.locator('button[name="decision"][value="approve"]').click()
        result = await asyncio.wait_for(call, TIMEOUT_MS / 1000)

    assert not result.is_error, result
    converted = result.structured_content
    assert converted is not None, result
    assert converted["source"]["timezone"] == "UTC"
    assert "T12:00:00" in converted["source"]["datetime"]
    assert converted["target"]["timezone"] == "Asia/Tokyo"
    assert "T21:00:00+09:00" in converted["target"]["datetime"]
    assert converted["time_difference"] == "+9.0h"
    await expect(item).to_contain_text(re.compile("approved", re.IGNORECASE), timeout=TIMEOUT_MS)
    await expect(item).not_to_contain_text(re.compile("denied", re.IGNORECASE))
    await snap(page, "approved")


async def test_a_reviewer_denies_a_held_call_and_the_agent_gets_the_reason(
    page: Page, snap: Snap, dashboard_gateway: Gateway
) -> None:
    comment = "no time travel on Fridays"
    async with shown_while_held(page, dashboard_gateway, []) as (item, call):
        await snap(page, "approval-pending")
        await item.locator('textarea[name="comment"]').fill(comment)
        await item.locator('button[name="decision"][value="deny"]').click()
        with pytest.raises(MCPError) as refused:
            await asyncio.wait_for(call, TIMEOUT_MS / 1000)

    assert refused.value.code == -32002, refused.value
    assert "denied" in refused.value.message, refused.value.message
    assert comment in refused.value.message, refused.value.message
    await expect(item).to_contain_text(re.compile("denied", re.IGNORECASE), timeout=TIMEOUT_MS)
    await expect(item).not_to_contain_text(re.compile("approved", re.IGNORECASE))
    await snap(page, "denied")


async def test_a_reviewer_of_another_tenant_sees_nothing_of_acme(
    browser: Browser, snap: Snap, dashboard_gateway: Gateway
) -> None:
    gw = dashboard_gateway
    async with mcp_client(gw, gw.tokens["alice"]) as client:  # acme has a call to leak
        assert not (await client.call_tool("time__get_current_time", {"timezone": "UTC"})).is_error
    context = await browser.new_context(base_url=gw.base)  # fresh: no cookies of rita's
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    await login_reviewer(page, "oscar", "other")
    await snap(page, "oscar-logged-in")

    for path in ("/dashboard/acme/feed", "/dashboard/acme/approvals"):
        response = await page.goto(path)
        assert response is not None
        assert response.status == 404, f"{path}: HTTP {response.status}"
        await snap(page, f"oscar-{path.rsplit('/', 1)[-1]}-of-acme")
        for trace in ACME_TRACES[:3]:
            assert trace not in await page.content(), f"{path} shows {trace!r} to oscar"

    for path in ("/dashboard/other/feed", "/dashboard/other/approvals"):
        response = await page.goto(path)
        assert response is not None
        assert response.status == 200, f"{path}: HTTP {response.status}"
        html = await page.content()
        for trace in ACME_TRACES:
            assert trace not in html, f"{path} shows {trace!r} to oscar"
        await snap(page, f"oscar-own-{path.rsplit('/', 1)[-1]}")
    await context.close()
