"""Browser tests: Debian's chromium driven by Playwright (async API, since pytest-asyncio runs
every test in an event loop) against a real gateway of this module's own, set up with the
bootstrap commands. Screenshots go to ``$ARTIFACTS_DIR/screenshots/`` (``var/artifacts`` by
default): the steps a test chooses, and every open page of a test that failed."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Playwright, async_playwright

from tests.e2e.conftest import ROOT, Gateway, start_server, stop_server

logger = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; `playwright install` cannot download here
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORDS = {"rita": "rita-browser-pw-1", "oscar": "oscar-browser-pw-1"}  # throwaway logins
TIMEOUT_MS = 10_000  # every bounded wait in these tests

Snap = Callable[[Page, str], Awaitable[Path]]


def screenshots_dir() -> Path:
    artifacts = Path(os.environ.get("ARTIFACTS_DIR") or ROOT / "var" / "artifacts")
    folder = artifacts / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:120]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell a failed test at teardown."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


# Runs management commands one after another in a single `manage.py shell` process (each
# Django start-up costs a second or more): [argv, extra environment] pairs in, outputs out.
_RUN_COMMANDS = """
import io, json, os
from django.core.management import call_command
outputs = []
for argv, extra in json.loads(os.environ["SETUP_COMMANDS"]):
    os.environ.update(extra)
    out = io.StringIO()
    call_command(*argv, stdout=out)
    outputs.append(out.getvalue())
    for key in extra:
        del os.environ[key]
print(json.dumps(outputs))
"""


def setup_commands(gw: Gateway, *commands: tuple[list[str], dict[str, str]]) -> list[str]:
    """``manage.py <argv>`` with ``extra`` environment for each command, in order, in one
    process; each command's output."""
    runner = Gateway(
        data_dir=gw.data_dir, env={**gw.env, "SETUP_COMMANDS": json.dumps(list(commands))}
    )
    result = runner.manage("shell", "--no-imports", "-c", _RUN_COMMANDS)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def dashboard_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A live gateway over its own database: tenants acme and other, reviewers rita (acme) and
    oscar (other), agent alice of acme allowed time__get_current_time and held for approval
    on time__convert_time, with the real mcp-server-time upstream."""
    data_dir = tmp_path_factory.mktemp("browser-gateway")
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "MCP_CALL_TIMEOUT_SECONDS": "10",
        "GOVERNANCE_POLL_SECONDS": "0.25",
        "UPSTREAM_BACKOFF_INITIAL": "0.1",
        "UPSTREAM_BACKOFF_MAX": "0.5",
        "UPSTREAM_WATCH_SECONDS": "0.5",
        "DASHBOARD_POLL_SECONDS": "0.2",
        "APPROVAL_PROGRESS_SECONDS": "0.5",
        "PYTHONPATH": str(ROOT),
    }
    gw = Gateway(data_dir=data_dir, env=env)
    alice = ["--tenant", "acme", "--agent", "alice"]
    upstream = f"{sys.executable} -m mcp_server_time"
    outputs = setup_commands(
        gw,
        (["migrate", "-v0"], {}),
        (["tenant_create", "acme"], {}),
        (["tenant_create", "other"], {}),
        (["member_add", "rita", "--tenant", "acme", "--role", "reviewer"],
         {"MEMBER_PASSWORD": PASSWORDS["rita"]}),
        (["member_add", "oscar", "--tenant", "other", "--role", "reviewer"],
         {"MEMBER_PASSWORD": PASSWORDS["oscar"]}),
        (["agent_create", "--tenant", "acme", "alice"], {}),
        (["toolserver_add", "--tenant", "acme", "time", "--command", upstream], {}),
        (["rule_add", *alice, "--tool", "time__get_current_time"], {}),
        (["rule_add", *alice, "--tool", "time__convert_time", "--effect", "require_approval"], {}),
    )  # fmt: skip
    gw.tokens["alice"] = outputs[5].strip().splitlines()[-1]  # agent_create: the token, alone
    start_server(gw)
    yield gw
    stop_server(gw)


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as driver:
        yield driver


@pytest.fixture
async def browser(playwright: Playwright, request: pytest.FixtureRequest) -> AsyncIterator[Browser]:
    """Headless chromium for one test. Missing chromium fails the test (``make test`` installs
    it with apt); it is never skipped. When the test fails, every page still open is
    screenshotted before the browser closes."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`, "
            "which `make test` does); these tests never download a browser"
        )
    browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    if _failed(request):
        folder = screenshots_dir()
        for c, context in enumerate(browser.contexts):
            for p, page in enumerate(context.pages):
                name = f"{_slug(request.node.name)}-FAILED-context{c}-page{p}.png"
                try:
                    await page.screenshot(path=folder / name, full_page=True)
                except Exception:  # a crashed page must not hide the test's own error
                    logger.exception("failure screenshot %s not taken", name)
    await browser.close()


@pytest.fixture
async def page(browser: Browser, dashboard_gateway: Gateway) -> Page:
    """A page in a fresh browser context (no cookies), its relative URLs on the live server
    (left open for ``browser`` to screenshot if the test fails, and to close)."""
    context = await browser.new_context(base_url=dashboard_gateway.base)
    context.set_default_timeout(TIMEOUT_MS)
    return await context.new_page()


@pytest.fixture(autouse=True)
def _fresh_screenshots(request: pytest.FixtureRequest) -> None:
    """A test's screenshots of an earlier run are gone before it runs again."""
    for old in screenshots_dir().glob(f"{_slug(request.node.name)}-*.png"):
        old.unlink(missing_ok=True)


@pytest.fixture
def snap(request: pytest.FixtureRequest) -> Snap:
    """``await snap(page, "step")`` saves ``<test>-<n>-step.png`` in the screenshots folder."""
    count = 0

    async def take(page: Page, step: str) -> Path:
        nonlocal count
        count += 1
        path = screenshots_dir() / f"{_slug(request.node.name)}-{count:02d}-{_slug(step)}.png"
        await page.screenshot(path=path, full_page=True)
        return path

    return take
