"""A real gateway: `manage.py serve` on a free loopback port over its own SQLite database,
set up with the bootstrap commands, with real upstream MCP servers over stdio."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from examples.mcp_ws import websocket_client

ROOT = Path(__file__).resolve().parents[2]
TESTKIT = Path(__file__).with_name("testkit_server.py")
CALL_TIMEOUT = 2.0
T = TypeVar("T")


@dataclass
class Gateway:
    data_dir: Path
    env: dict[str, str]
    base: str = ""
    tokens: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None

    @property
    def http_url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/mcp/ws"

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows straight from the gateway's database."""
        with contextlib.closing(sqlite3.connect(self.data_dir / "orchestrator.sqlite3")) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql, params).fetchall()]

    def audit(self, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Audit rows, oldest first."""
        return self.query(f"SELECT * FROM audit_auditrecord WHERE {where} ORDER BY id", params)  # noqa: S608 - tests' own

    def wait_for_audit(
        self, where: str, params: tuple[Any, ...], count: int
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = self.audit(where, params)
            if len(rows) >= count:
                return rows
            time.sleep(0.05)
        return self.audit(where, params)


def start_server(gateway: Gateway) -> None:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "serve", "--port", "0"],
        env=gateway.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if match := re.search(r"gateway listening on (http://\S+)", line):
            gateway.base, gateway.process = match.group(1), process
            break
    else:
        process.kill()
        raise AssertionError("the gateway did not start")
    # Drain its output in the background so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()


def stop_server(gateway: Gateway) -> None:
    assert gateway.process is not None
    gateway.process.terminate()
    try:
        gateway.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        gateway.process.kill()


def worker_start(env: dict[str, str], name: str, log: Path) -> subprocess.Popen[bytes]:
    """A real Celery worker (prefork, one child), writing to ``log``, in its own process group
    so ``worker_stop`` can kill it whole."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "orchestrator", "worker",
                "--pool", "prefork", "--concurrency", "1", "-Q", "celery",
                "--loglevel", "INFO", "--hostname", f"{name}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def worker_stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.terminate()  # the worker's warm shutdown stops its pool children
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)


def wait_for(ready: Callable[[], T], timeout: float, what: str, log: Path | None = None) -> T:
    """``ready()``'s first truthy value within ``timeout`` seconds; else fail, with the tail
    of ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := ready():
            return value
        time.sleep(0.02)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (its parent has not reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("gateway")
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "MCP_CALL_TIMEOUT_SECONDS": str(CALL_TIMEOUT),
        "GOVERNANCE_POLL_SECONDS": "0.25",
        "UPSTREAM_BACKOFF_INITIAL": "0.1",
        "UPSTREAM_BACKOFF_MAX": "0.5",
        "UPSTREAM_WATCH_SECONDS": "0.5",
        # Its timeout and crash tests fail the testkit three times in a row: the breaker opens.
        "UPSTREAM_BREAKER_RESET_SECONDS": "0.5",
        "MCP_MAX_MESSAGE_BYTES": str(64 * 1024),
        "MCP_PAGE_SIZE": "2",
        "PYTHONPATH": str(ROOT),
    }
    gw = Gateway(data_dir=data_dir, env=env)
    gw.manage("migrate", "-v0")
    gw.manage("tenant_create", "acme")
    for agent in ("alice", "bob", "carol", "dave"):
        out = gw.manage("agent_create", "--tenant", "acme", agent).stdout
        gw.tokens[agent] = out.strip().splitlines()[-1]
    gw.manage(
        "toolserver_add",
        "--tenant",
        "acme",
        "time",
        "--command",
        f"{sys.executable} -m mcp_server_time",
    )
    gw.manage(
        "toolserver_add", "--tenant", "acme", "testkit", "--command", f"{sys.executable} {TESTKIT}"
    )
    gw.manage("rule_add", "--tenant", "acme", "--tool", "time__get_current_time")
    gw.manage("rule_add", "--tenant", "acme", "--agent", "alice", "--tool", "time__*")
    gw.manage("rule_add", "--tenant", "acme", "--agent", "alice", "--tool", "testkit__*")
    start_server(gw)
    yield gw
    stop_server(gw)


@contextlib.asynccontextmanager
async def mcp_client(
    gateway: Gateway,
    token: str,
    *,
    transport: str = "http",
    mode: str = "auto",
    message_handler: Any = None,
) -> AsyncIterator[Client]:
    """The official mcp SDK client, unmodified, over streamable HTTP or WebSocket."""
    headers = {"Authorization": f"Bearer {token}"}
    async with contextlib.AsyncExitStack() as stack:
        if transport == "ws":
            target: Any = websocket_client(gateway.ws_url, headers)
        else:
            http = await stack.enter_async_context(httpx2.AsyncClient(headers=headers))
            target = streamable_http_client(gateway.http_url, http_client=http)
        client = Client(target, mode=mode, message_handler=message_handler, read_timeout_seconds=30)
        yield await stack.enter_async_context(client)


async def list_all(client: Client) -> list[str]:
    """Every tool name, following the cursor through all pages."""
    names, cursor = [], None
    while True:
        page = await client.list_tools(cursor=cursor)
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return names


def jsonrpc(method: str, params: dict[str, Any] | None = None, id: int | str = 1) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
    if params is not None:
        message["params"] = params
    return json.dumps(message)


def admin_create(gateway: Gateway, username: str, password: str) -> None:
    """Superuser ``username`` on the gateway's database, unless it exists (``password`` is a
    throwaway on a test database)."""
    with_password = Gateway(
        data_dir=gateway.data_dir, env={**gateway.env, "DJANGO_SUPERUSER_PASSWORD": password}
    )
    with_password.manage(
        "createsuperuser",
        "--noinput",
        "--username",
        username,
        "--email",
        f"{username}@example.test",
        check=False,  # exists already when a module reruns
    )


def admin_login(gateway: Gateway, username: str, password: str) -> httpx2.Client:
    """A Django admin session on the live server, as superuser ``username``."""
    admin_create(gateway, username, password)
    session = httpx2.Client(base_url=gateway.base, follow_redirects=False, timeout=10)
    session.get("/admin/login/")
    answer = session.post(
        "/admin/login/?next=/admin/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{gateway.base}/admin/login/"},
    )
    assert answer.status_code == 302, answer.text[:500]
    return session
