"""deploy/nginx.conf, run by a real nginx in front of two gateways on one PostgreSQL and one
Redis: WebSocket agents are spread over both gateways, calls succeed over WebSocket and HTTP,
the SSE streams (progress, list changes, the dashboard's feed) come through event by event,
and a draining, then stopped, gateway is skipped. docs/operations.md shows this config as it
is, and lists every setting.

Which gateway served a call: each gateway process runs its own testkit upstream, whose tool
``pid`` answers with its process id, and that process's parent is the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import mcp_types
import pytest
from mcp import Client

from tests.cluster.conftest import Cluster, Endpoint, Node, until_authorized
from tests.e2e.conftest import ROOT, jsonrpc, mcp_client

pytestmark = pytest.mark.e2e

CONFIG = ROOT / "deploy" / "nginx.conf"
ADMIN = "nginx-admin"
ADMIN_PASSWORD = "nginx-admin-pw"  # a throwaway login on a test database
WAIT = 5.0  # the longest anything may take to come through; the poll's bound is 0.25 s
AGENTS = 12  # WebSocket agents connected through nginx at once


@dataclass
class Proxy(Endpoint):
    """nginx running the rendered deploy/nginx.conf; its access log in ``log``."""

    log: Path


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail(
            "nginx is not installed (make test installs it with apt: apt-get install nginx)"
        )
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"deploy/nginx.conf no longer has {old!r}: update the test's rendering"
    return text.replace(old, new)


def render(prefix: Path, port: int, upstreams: tuple[int, int]) -> Path:
    """deploy/nginx.conf with this run's ports, and every file nginx writes under ``prefix``."""
    text = CONFIG.read_text()
    text = replaced(text, "listen 8080;", f"listen 127.0.0.1:{port};")
    text = replaced(text, "server 127.0.0.1:8001 ", f"server 127.0.0.1:{upstreams[0]} ")
    text = replaced(text, "server 127.0.0.1:8002 ", f"server 127.0.0.1:{upstreams[1]} ")
    text = replaced(text, "pid /run/nginx.pid;", f"pid {prefix}/nginx.pid;")
    text = replaced(text, "/var/log/nginx/", f"{prefix}/logs/")
    # As root, nginx's workers switch to `user`; ours must reach the files under ``prefix``.
    user = "root" if os.geteuid() == 0 else ""
    text = replaced(text, "user www-data;", f"user {user};" if user else "")
    temp = "".join(
        f"\n    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = replaced(text, "\nhttp {", "\nhttp {" + temp)
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def nodes(cluster: Cluster) -> tuple[Node, Node]:
    cluster.manage(
        "member_add", ADMIN, "--tenant", "acme", "--role", "admin", MEMBER_PASSWORD=ADMIN_PASSWORD
    )
    fast = {"APPROVAL_PROGRESS_SECONDS": "0.3", "DASHBOARD_POLL_SECONDS": "0.2"}
    return cluster.start("a", **fast), cluster.start("b", **fast)


@pytest.fixture(scope="module")
def nginx_config(nodes: tuple[Node, Node], tmp_path_factory: pytest.TempPathFactory) -> Proxy:
    """The rendered config (``nginx.conf`` in the log's grandparent) and where it listens."""
    prefix, port = tmp_path_factory.mktemp("nginx"), free_port()
    render(prefix, port, (nodes[0].port, nodes[1].port))
    return Proxy(port, prefix / "logs" / "orchestrator-access.log")


def nginx_argv(proxy: Proxy, *extra: str) -> list[str]:
    prefix = proxy.log.parent.parent
    return [nginx_binary(), "-c", str(prefix / "nginx.conf"), "-p", f"{prefix}/", *extra]


@pytest.fixture(scope="module")
def proxy(nginx_config: Proxy) -> Iterator[Proxy]:
    """nginx running the rendered config, in the foreground, for the module."""
    stderr = nginx_config.log.with_name("stderr.log")
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            nginx_argv(nginx_config, "-g", "daemon off;"), stdout=err, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", nginx_config.port), 0.5).close()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nginx did not start:\n{stderr.read_text()}")
            time.sleep(0.05)
        yield nginx_config
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def node_of(pid: int, nodes: tuple[Node, ...]) -> str:
    """The gateway whose upstream child is process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    parent = int(re.search(r"^PPid:\s+(\d+)", status, re.MULTILINE)[1])  # type: ignore[index]
    by_pid = {node.process.pid: node.name for node in nodes}
    assert parent in by_pid, f"process {pid}'s parent {parent} is no gateway"
    return by_pid[parent]


async def served_by(client: Client, nodes: tuple[Node, ...]) -> str:
    result = await client.call_tool("testkit__pid", {})
    assert not result.is_error, result
    return node_of(int(result.content[0].text), nodes)


async def agent_new(
    cluster: Cluster, nodes: tuple[Node, ...], *, held: str = ""
) -> tuple[str, str]:
    """A fresh agent of tenant acme (with tool ``held`` held for approval), once every gateway
    knows its token (and lists ``held``): its name and token."""
    name = f"n-{uuid.uuid4().hex[:8]}"
    out = await asyncio.to_thread(cluster.manage, "agent_create", "--tenant", "acme", name)
    token = out.strip().splitlines()[-1]
    if held:
        rule = ("--agent", name, "--effect", "require_approval", "--tool", held)
        await asyncio.to_thread(cluster.manage, "rule_add", "--tenant", "acme", *rule)
    async with asyncio.timeout(WAIT):
        for node in nodes:
            await until_authorized(node, token, timeout=WAIT)
            if held:
                async with mcp_client(node, token, transport="http", mode="2026-07-28") as c:
                    while held not in [t.name for t in (await c.list_tools()).tools]:
                        await asyncio.sleep(0.05)
    return name, token


def test_operations_md_shows_the_config_as_it_is():
    page = (ROOT / "docs" / "operations.md").read_text()
    shown = re.search(r"```nginx\n(.*?)```", page, re.DOTALL)
    assert shown is not None, "docs/operations.md has no nginx block"
    assert shown[1] == CONFIG.read_text(), "docs/operations.md shows another nginx.conf"


def test_operations_md_lists_every_setting():
    """The table in docs/operations.md is the complete one: every variable the code reads."""
    read = {
        name
        for app in ("orchestrator", "governance", "audit")
        for path in (ROOT / app).rglob("*.py")
        for name in re.findall(r"\benv_[a-z]+\(\s*\"([A-Z][A-Z0-9_]*)\"", path.read_text())
    }
    assert {"DATABASE_URL", "REDIS_URL", "DRAIN_SECONDS"} <= read  # the search finds them
    page = (ROOT / "docs" / "operations.md").read_text()
    listed = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", page, re.MULTILINE))
    assert read - listed == set(), "add these to the tables in docs/operations.md"


def test_nginx_accepts_the_config(nginx_config: Proxy):
    checked = subprocess.run(nginx_argv(nginx_config, "-t"), capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr
    assert "test is successful" in checked.stderr


async def test_websocket_agents_are_spread_over_both_gateways(cluster, nodes, proxy):
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                mcp_client(proxy, cluster.tokens["alice"], transport="ws", mode=mode)
            )
            for mode in ("legacy", "2026-07-28") * (AGENTS // 2)
        ]  # all held open at once: least_conn hands each new one to the emptier gateway
        where = Counter([await served_by(client, nodes) for client in clients])
        for client in clients:
            result = await client.call_tool("time__get_current_time", {"timezone": "UTC"})
            assert not result.is_error
            assert result.structured_content["timezone"] == "UTC"
    assert set(where) == {"a", "b"}, where
    assert abs(where["a"] - where["b"]) <= 2, where

    # nginx's access log names the gateway of each WebSocket (its line is written at close).
    async with asyncio.timeout(WAIT):
        while True:
            lines = [line for line in proxy.log.read_text().splitlines() if "/mcp/ws" in line]
            if len(lines) >= AGENTS:
                break
            await asyncio.sleep(0.05)
    upstreams = {re.search(r"upstream=(\S+)", line)[1] for line in lines}  # type: ignore[index]
    assert {f"127.0.0.1:{node.port}" for node in nodes} <= upstreams


async def test_http_calls_and_sessions_go_through_nginx(cluster, nodes, proxy):
    token = cluster.tokens["alice"]
    for mode in ("legacy", "2026-07-28"):
        async with mcp_client(proxy, token, transport="http", mode=mode) as client:
            assert await served_by(client, nodes) in {"a", "b"}
            echoed = await client.call_tool("testkit__echo", {"text": f"{mode} via nginx"})
            assert echoed.content[0].text == f"{mode} via nginx"

    # A handshake-era session is a signed id: whichever gateway nginx picks serves it. (The
    # SDK's client would also hold the session's GET stream open on one gateway, and
    # least_conn would then send every POST to the other: here nothing else is open, so
    # nginx takes turns.)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx2.AsyncClient(base_url=proxy.base, headers=headers) as http:
        opened = await http.post(
            "/mcp", content=jsonrpc("initialize", {"protocolVersion": "2025-11-25"})
        )
        session = {"Mcp-Session-Id": opened.headers["Mcp-Session-Id"]}
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await http.post("/mcp", json=initialized, headers=session)).status_code == 202
        where: Counter[str] = Counter()
        for i in range(8):
            call = jsonrpc("tools/call", {"name": "testkit__pid", "arguments": {}}, id=i + 2)
            answer = await http.post("/mcp", content=call, headers=session)
            assert answer.status_code == 200, answer.text
            where[node_of(int(answer.json()["result"]["content"][0]["text"]), nodes)] += 1
    assert set(where) == {"a", "b"}, where

    # The Host header reaches the gateways as the client sent it (port included), so Origin
    # checks compare the browser's origin with nginx's own address.
    ping = jsonrpc("initialize", {"protocolVersion": "2025-11-25"})
    async with httpx2.AsyncClient() as http:
        same = await http.post(
            proxy.http_url, content=ping, headers={**headers, "Origin": proxy.base}
        )
        assert same.status_code == 200, same.text
        other = {**headers, "Origin": "http://evil.example"}
        assert (await http.post(proxy.http_url, content=ping, headers=other)).status_code == 403


@contextlib.asynccontextmanager
async def held_call(proxy: Proxy, token: str) -> AsyncIterator[tuple[asyncio.Future[Any], str]]:
    """A call held for approval through nginx, over HTTP with progress, once three progress
    notifications came through, each on its own, while it waited: the call and its approval
    request's id. The client leaves at the end, unless the call was answered."""
    told: list[str] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        told.append(message or "")

    async with mcp_client(proxy, token, transport="http", mode="2026-07-28") as client:
        call = asyncio.ensure_future(
            client.call_tool("testkit__echo", {"text": "held"}, progress_callback=progress)
        )
        try:
            async with asyncio.timeout(WAIT):
                while len(told) < 3:
                    await asyncio.sleep(0.02)
            assert not call.done()
            yield call, re.search(r"approval ([0-9a-f-]{36})", told[0])[1]  # type: ignore[index]
        finally:
            call.cancel()
            with contextlib.suppress(BaseException):
                await call


def approval_status(cluster: Cluster, approval: str) -> str:
    rows = cluster.query("SELECT status FROM governance_approvalrequest WHERE id = %s", (approval,))
    return rows[0]["status"]


async def test_progress_of_a_held_call_streams_through_nginx(cluster, nodes, proxy):
    _, token = await agent_new(cluster, nodes, held="testkit__echo")
    async with held_call(proxy, token) as (_, approval):
        assert approval_status(cluster, approval) == "pending"
    # The client left: nginx closed its connection to the gateway, which cancelled the call.
    async with asyncio.timeout(WAIT):
        while approval_status(cluster, approval) == "pending":
            await asyncio.sleep(0.05)
    assert approval_status(cluster, approval) == "cancelled"


async def test_a_reviewer_approves_a_held_call_through_nginx(cluster, nodes, proxy):
    _, token = await agent_new(cluster, nodes, held="testkit__echo")
    async with (
        held_call(proxy, token) as (call, approval),
        httpx2.AsyncClient(base_url=proxy.base, auth=(ADMIN, ADMIN_PASSWORD)) as api,
    ):
        decided = await api.post(
            f"/api/v1/tenants/acme/approvals/{approval}/decision",
            json={"decision": "approve", "comment": "through nginx"},
        )
        result = await asyncio.wait_for(call, WAIT) if decided.status_code == 200 else None
    assert decided.status_code == 200, decided.text[:300]  # here, not inside the client
    assert result is not None
    assert result.content[0].text == "held"


async def test_tool_list_changes_stream_through_nginx(cluster, nodes, proxy):
    name, token = await agent_new(cluster, nodes)
    heard: dict[str, list[float]] = {"legacy": [], "2026-07-28": []}

    def listener(mode: str) -> Any:
        async def on_message(message: Any) -> None:
            if isinstance(message, mcp_types.ToolListChangedNotification):
                heard[mode].append(time.monotonic())

        return on_message

    async with contextlib.AsyncExitStack() as stack:
        for mode in heard:
            client = await stack.enter_async_context(
                mcp_client(
                    proxy, token, transport="http", mode=mode, message_handler=listener(mode)
                )
            )
            if mode == "legacy":  # the session's GET stream
                await asyncio.sleep(0.5)  # the SDK opens it after initialize, in the background
            else:
                await stack.enter_async_context(client.listen(tools_list_changed=True))
        rule = ("rule_add", "--tenant", "acme", "--agent", name, "--tool", "testkit__echo")
        await asyncio.to_thread(cluster.manage, *rule)
        committed_at = time.monotonic()
        async with asyncio.timeout(WAIT):
            while not all(heard.values()):
                await asyncio.sleep(0.01)
    for mode, times in heard.items():
        assert times[0] - committed_at < 2.0, mode


async def test_the_dashboard_works_through_nginx(cluster, nodes, proxy):
    async with httpx2.AsyncClient(base_url=proxy.base, timeout=10) as browser:
        page = await browser.get("/accounts/login/")
        assert page.status_code == 200
        form = {
            "username": ADMIN,
            "password": ADMIN_PASSWORD,
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        }
        # Django's CSRF check compares Origin with the Host it was given: nginx's own.
        forged = await browser.post(
            "/accounts/login/", data=form, headers={"Origin": "http://evil.example"}
        )
        assert forged.status_code == 403
        login = await browser.post("/accounts/login/", data=form, headers={"Origin": proxy.base})
        assert login.status_code == 302, login.text[:500]

        [head] = cluster.query(
            "SELECT h.seq FROM audit_chainhead h JOIN governance_tenant t ON t.id = h.tenant_id"
            " WHERE t.slug = 'acme'"
        )
        stream = f"/dashboard/acme/stream?after={head['seq']}&feed=1"
        async with browser.stream("GET", stream, headers={"Accept": "text/event-stream"}) as sse:
            assert sse.status_code == 200
            assert sse.headers["content-type"].startswith("text/event-stream")
            async with mcp_client(proxy, cluster.tokens["alice"], transport="http") as client:
                await client.call_tool("testkit__echo", {"text": "watched"})
            async with asyncio.timeout(WAIT):
                async for line in sse.aiter_lines():
                    if line == "event: record":
                        break


async def new_clients_through(
    proxy: Proxy, cluster: Cluster, nodes: tuple[Node, ...]
) -> Counter[str]:
    """New clients through nginx, one after another, each calling three times (over HTTP,
    each call is a request of its own): who served the calls, or the error each client got."""
    where: Counter[str] = Counter()
    for transport in ("ws", "http") * 4:
        try:
            async with mcp_client(proxy, cluster.tokens["alice"], transport=transport) as client:
                for _ in range(3):
                    where[await served_by(client, nodes)] += 1
        except Exception as exc:  # counted, and shown by the assertion
            where[f"{transport}: {exc!r}"[:200]] += 1
    return where


async def test_a_draining_then_stopped_gateway_is_skipped(cluster, nodes, proxy):
    """Last in the module: it stops gateway b."""
    b = nodes[1]
    # nginx keeps idle connections to both gateways from the calls before this one.
    async with mcp_client(proxy, cluster.tokens["alice"], transport="http") as client:
        assert {await served_by(client, nodes) for _ in range(6)} == {"a", "b"}
    # A call in flight on b keeps its drain going for a few seconds. The client's exit fails:
    # b closed the connection with 1012 ("restarting") under it.
    during: Counter[str] = Counter()
    stopping: asyncio.Future[int] | None = None
    drain_over = True
    with contextlib.suppress(Exception):
        async with mcp_client(b, cluster.tokens["alice"], transport="ws") as on_b:
            slow = asyncio.ensure_future(on_b.call_tool("testkit__sleep", {"seconds": 3}))
            await asyncio.sleep(0.3)
            stopping = asyncio.ensure_future(asyncio.to_thread(cluster.stop, "b"))
            await asyncio.sleep(0.3)
            during = await new_clients_through(proxy, cluster, nodes)
            drain_over = stopping.done()
            await slow
    assert stopping is not None
    await stopping
    after = await new_clients_through(proxy, cluster, nodes)
    assert not drain_over, "b's drain ended before the clients were done: no test"
    assert during == {"a": 24}, during
    assert after == {"a": 24}, after
