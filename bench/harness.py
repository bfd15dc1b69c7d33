"""What every gateway benchmark shares: a tenant on a fresh database, a running gateway, a lean
JSON-RPC client for WebSocket and stdio, process CPU and memory from /proc, and the one
``report`` line each benchmark prints last.

Benchmarks run on loopback only; the gateway is a real ``manage.py serve`` child process.

    from bench.harness import Gateway, prepare, report, WsClient
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ECHO_UPSTREAM = [PYTHON, str(ROOT / "bench" / "echo_upstream.py")]
TESTKIT_UPSTREAM = [PYTHON, str(ROOT / "tests" / "e2e" / "testkit_server.py")]
PROTOCOL = "2025-11-25"
RESULTS_ENV = "BENCH_RESULTS"  # make bench: each report() also appends a JSON line here


# ---------------------------------------------------------------- reporting


def report(name: str, *, ratio: float, goal: str, met: bool, figures: str) -> None:
    """Print the benchmark's last line: its ratio, its goal, whether it is met and the figures
    the ratio comes from. ``make bench`` collects these into bench/results/latest.md."""
    verdict = "met" if met else "MISSED"
    print(f"RESULT {name}: {ratio:.3g} (goal {goal}: {verdict}) | {figures}", flush=True)
    if path := os.environ.get(RESULTS_ENV):
        line = {"name": name, "ratio": ratio, "goal": goal, "met": met, "figures": figures}
        with open(path, "a") as out:
            out.write(json.dumps(line) + "\n")


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


# ---------------------------------------------------------------- processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parent_pids() -> dict[int, int]:
    """Every live process's parent, from /proc (pid → ppid)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parents[int(stat.parent.name)] = int(stat.read_text().rpartition(")")[2].split()[1])
    return parents


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def raise_open_files(wanted: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it) as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


# ---------------------------------------------------------------- a tenant to measure


@dataclass
class Setup:
    """A migrated database with tenant ``bench``: agents ``bot0``… allowed ``echo__*`` on the
    upstream server ``echo``; ``env`` points any process at it."""

    env: dict[str, str]
    tokens: list[str]
    upstream: list[str]

    @property
    def token(self) -> str:
        return self.tokens[0]


_SETUP_SCRIPT = """
import json, secrets, sys
import django
django.setup()
from django.core.management import call_command
from governance.models import Agent, AgentToken, Tenant
from governance.services.agents import TOKEN_PREFIX, tenant_create, token_digest
from governance.services.versions import tenant_version_bump
agents, upstream = int(sys.argv[1]), json.loads(sys.argv[2])
tenant = tenant_create(slug="bench")
bots = Agent.objects.bulk_create(Agent(tenant=tenant, name=f"bot{i}") for i in range(agents))
tokens = [TOKEN_PREFIX + secrets.token_urlsafe(32) for _ in bots]
AgentToken.objects.bulk_create(
    AgentToken(agent=a, prefix=t[:10], digest=token_digest(t)) for a, t in zip(bots, tokens)
)
tenant_version_bump(tenant_id=tenant.id)
call_command("toolserver_add", "echo", tenant="bench", cmd=" ".join(upstream), stdout=sys.stderr)
call_command("rule_add", tenant="bench", tool="echo__*", stdout=sys.stderr)
print(json.dumps(tokens))
"""


def prepare(
    data_dir: str | Path,
    *,
    agents: int = 1,
    upstream: Sequence[str] = ECHO_UPSTREAM,
    env: dict[str, str] | None = None,
) -> Setup:
    """Migrate a fresh database under ``data_dir`` (or ``DATABASE_URL`` in ``env``) and create
    the bench tenant with ``agents`` agents, each with its own token."""
    full_env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
        **(env or {}),
    }
    manage(full_env, "migrate", "-v0")
    done = subprocess.run(
        [PYTHON, "-c", _SETUP_SCRIPT, str(agents), json.dumps(list(upstream))],
        env=full_env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return Setup(env=full_env, tokens=json.loads(done.stdout), upstream=list(upstream))


@contextlib.contextmanager
def fresh_setup(**kwargs: Any) -> Iterator[Setup]:
    """``prepare`` in a temporary data directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-") as data:
        yield prepare(data, **kwargs)


@dataclass
class Gateway:
    """A running ``manage.py serve``."""

    process: subprocess.Popen[str]
    base: str  # http://127.0.0.1:PORT

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ws_url(self) -> str:
        return self.base.replace("http", "ws", 1) + "/mcp/ws"


@contextlib.contextmanager
def serve(
    setup: Setup, *, port: int = 0, env: dict[str, str] | None = None, argv: Sequence[str] = ()
) -> Iterator[Gateway]:
    """Start a gateway on the setup's database; stop it (SIGTERM, then SIGKILL) afterwards.
    ``argv`` replaces ``manage.py serve`` (e.g. another ASGI server)."""
    command = list(argv) or [PYTHON, str(ROOT / "manage.py"), "serve", "--port", str(port)]
    process = subprocess.Popen(
        command, env={**setup.env, **(env or {})}, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"(http://\S+)", line)
        if found is None:
            raise RuntimeError(f"the gateway did not start: {line!r}")
        yield Gateway(process=process, base=found.group(1))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- a lean JSON-RPC client


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")
        self.error = error


@dataclass
class _Client:
    """Requests by id over any line or frame transport; a reader task settles them, so many
    may be in flight at once. ``notifications`` keeps what the peer sent unasked."""

    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def _send(self, text: str) -> None:
        raise NotImplementedError

    def _received(self, text: str | bytes) -> None:
        message = json.loads(text)
        waiting = self._waiting.pop(message.get("id"), None) if "id" in message else None
        if waiting is None:
            self.notifications.append(message)
        elif not waiting.done():
            if "error" in message:
                waiting.set_exception(RpcError(message["error"]))
            else:
                waiting.set_result(message["result"])

    def _lost(self, exc: BaseException) -> None:
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(ConnectionError(f"connection lost: {exc!r}"))
        self._waiting.clear()

    async def request(self, method: str, params: dict[str, Any] | None = None) -> Any:
        request_id = next(self._ids)
        answer = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = answer
        message = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        await self._send(json.dumps(message, separators=(",", ":")))
        return await answer

    async def notify(self, method: str) -> None:
        await self._send(json.dumps({"jsonrpc": "2.0", "method": method}))

    async def initialize(self) -> dict[str, Any]:
        result = await self.request(
            "initialize",
            {
                "protocolVersion": PROTOCOL,
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "1"},
            },
        )
        await self.notify("notifications/initialized")
        return result

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return await self.request("tools/call", {"name": tool, "arguments": arguments})


class WsClient(_Client):
    """MCP over the gateway's WebSocket (subprotocol ``mcp``), authenticated by token."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self.ws = ws
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def connected(cls, url: str, token: str, *, initialize: bool = True):  # type: ignore[no-untyped-def]
        async with connect(
            url,
            subprotocols=[Subprotocol("mcp")],
            additional_headers={"Authorization": f"Bearer {token}"},
            max_size=None,
            compression=None,
        ) as ws:
            client = cls(ws)
            if initialize:
                await client.initialize()
            try:
                yield client
            finally:
                client._reader.cancel()

    async def _send(self, text: str) -> None:
        await self.ws.send(text)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self._received(frame)
        except Exception as exc:
            self._lost(exc)
        else:
            self._lost(ConnectionError("closed"))


class StdioClient(_Client):
    """MCP straight to an upstream over stdio: the baseline the gateway is measured against."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.process = process
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def spawned(cls, command: Sequence[str]):  # type: ignore[no-untyped-def]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=2**24,
        )
        client = cls(process)
        await client.initialize()
        try:
            yield client
        finally:
            client._reader.cancel()
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        await self.process.stdin.drain()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            while line := await self.process.stdout.readline():
                self._received(line)
        except Exception as exc:
            self._lost(exc)
        else:
            self._lost(ConnectionError("upstream exited"))
