"""A real deployment in miniature: gateway processes (`manage.py serve`) and Celery workers on
one PostgreSQL database and one Redis, as docs/operations.md runs them in production.

``cluster`` is module-scoped: a fresh database in the session's PostgreSQL cluster, a Redis
database number of its own, tenant ``acme`` with agents alice…dave and upstreams ``time``
(mcp-server-time) and ``testkit`` (tests/e2e/testkit_server.py), alice allowed ``time__*``
and ``testkit__*``, everyone ``time__get_current_time``. Nodes are started by the tests.
The database is a copy of one set up once per session (``python -m tests.cluster.setup``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.e2e.conftest import ROOT, jsonrpc, worker_start, worker_stop
from tests.pg import PostgresCluster

pytestmark = pytest.mark.e2e

START_SECONDS = 30.0
_redis_databases = itertools.count(1)  # one per cluster: rate-limit keys must not meet
# Every process of a deployment signs with the same key (docs/operations.md); the template's
# admin records were signed with it too.
SIGNING_KEY = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
TEMPLATE = "cluster_template"
_templates: dict[int, dict[str, str]] = {}  # id(PostgresCluster) → the template's tokens


@dataclass
class Endpoint:
    """What agents connect to on a loopback port: a gateway, or nginx in front of several."""

    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/mcp/ws"


async def until_authorized(endpoint: Endpoint, token: str, *, timeout: float) -> None:
    """Wait until ``endpoint`` knows ``token`` (it polls the database for new ones)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx2.AsyncClient() as http, asyncio.timeout(timeout):
        while True:
            answer = await http.post(
                endpoint.http_url,
                content=jsonrpc("initialize", {"protocolVersion": "2025-11-25"}),
                headers=headers,
            )
            if answer.status_code != 401:
                return
            await asyncio.sleep(0.05)


@dataclass
class Node(Endpoint):
    """One gateway process (``manage.py serve``), its log in ``log``."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Cluster:
    data_dir: Path
    env: dict[str, str]
    database_url: str
    redis_url: str
    tokens: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def manage(self, *args: str, **env: str) -> str:
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env={**self.env, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows straight from the cluster's PostgreSQL database."""
        with psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row) as db:
            return db.execute(sql, params).fetchall()  # type: ignore[arg-type] - tests' own

    def audit(self, where: str = "TRUE", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Audit rows, oldest first."""
        return self.query(f"SELECT * FROM audit_auditrecord WHERE {where} ORDER BY id", params)  # noqa: S608 - tests' own

    def start(self, name: str, *, port: int = 0, **env: str) -> Node:
        """Start gateway ``name`` (again, on its former port, if it ran before) and wait until
        it listens. ``env`` adds settings for this node only."""
        if not port and name in self.nodes:
            port = self.nodes[name].port
        log = self.data_dir / f"{name}.log"
        with log.open("ab") as out:
            offset = out.tell()
            process = subprocess.Popen(
                [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(port)],
                env={**self.env, **env},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its upstream children die with its group
            )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            text = log.read_bytes()[offset:].decode(errors="replace")
            if match := re.search(r"gateway listening on http://[^:]+:(\d+)", text):
                node = Node(int(match.group(1)), name, process, log)
                self.nodes[name] = node
                return node
            if process.poll() is not None:
                break
            time.sleep(0.05)
        process.kill()
        raise AssertionError(f"gateway {name} did not start:\n{log.read_text()[-3000:]}")

    def stop(self, name: str, *, timeout: float = 30.0) -> int:
        """SIGTERM: the gateway drains and exits. Returns its exit code."""
        node = self.nodes[name]
        node.process.send_signal(signal.SIGTERM)
        try:
            return node.process.wait(timeout=timeout)
        finally:
            _kill_group(node.process)

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no flush; the process and its upstream children are gone."""
        node = self.nodes[name]
        node.process.kill()
        node.process.wait(timeout=10)
        _kill_group(node.process)

    def worker(self, name: str, **env: str) -> subprocess.Popen[bytes]:
        worker = worker_start({**self.env, **env}, name, self.data_dir / f"worker-{name}.log")
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for name, node in self.nodes.items():
            if node.alive():
                with contextlib.suppress(Exception):
                    self.stop(name, timeout=15)
            _kill_group(node.process)
        for worker in self.workers:
            worker_stop(worker)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def cluster_env(data_dir: Path, database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "MCP_CALL_TIMEOUT_SECONDS": "5",
        "GOVERNANCE_POLL_SECONDS": "0.25",
        "UPSTREAM_BACKOFF_INITIAL": "0.1",
        "UPSTREAM_BACKOFF_MAX": "0.5",
        "UPSTREAM_WATCH_SECONDS": "1",
        "NODE_HEARTBEAT_SECONDS": "0.5",
        "NODE_LEASE_SECONDS": "3",
        "DRAIN_SECONDS": "5",
        "AUDIT_SIGNING_KEY": SIGNING_KEY,
    }


def _template(postgres_cluster: PostgresCluster, data_dir: Path) -> dict[str, str]:
    """Set up the template database once per PostgreSQL cluster; returns the agents' tokens."""
    key = id(postgres_cluster)
    if key not in _templates:
        url = postgres_cluster.create_database(TEMPLATE)
        result = subprocess.run(
            [sys.executable, "-m", "tests.cluster.setup"],
            env=cluster_env(data_dir, url, "redis://127.0.0.1:1/0"),  # the setup needs no Redis
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == 0, f"cluster setup failed:\n{result.stderr[-3000:]}"
        _templates[key] = json.loads(result.stdout.strip().splitlines()[-1])
    return _templates[key]


@contextlib.contextmanager
def cluster_running(
    postgres_cluster: PostgresCluster, redis_url: str, data_dir: Path
) -> Iterator[Cluster]:
    """A set-up cluster on a fresh database; every process it started is stopped after."""
    tokens = _template(postgres_cluster, data_dir)
    name = f"cluster_{uuid.uuid4().hex[:12]}"
    database_url = postgres_cluster.create_database(name, template=TEMPLATE)
    env = cluster_env(data_dir, database_url, redis_url)
    cluster = Cluster(data_dir, env, database_url, redis_url, tokens=dict(tokens))
    try:
        yield cluster
    finally:
        cluster.close()
        postgres_cluster.drop_database(name)


@pytest.fixture(scope="module")
def cluster(
    postgres_cluster: PostgresCluster, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    redis_url = redis_server.rsplit("/", 1)[0] + f"/{next(_redis_databases)}"
    with cluster_running(postgres_cluster, redis_url, tmp_path_factory.mktemp("cluster")) as c:
        yield c
