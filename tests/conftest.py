from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from orchestrator.gateway import gateway_shutdown
from tests.pg import PostgresCluster, pg_bin
from tests.redis import RedisServer


@pytest.fixture
async def fresh_gateway() -> AsyncIterator[None]:
    """Each async test's event loop gets its own gateway, closed with the test."""
    yield
    await gateway_shutdown()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` on a free loopback port, for the session (tests/redis.py);
    yields its URL. A test that restarts Redis starts a ``RedisServer`` of its own."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError:
        pytest.fail("redis-server is not installed (make test installs it with apt)")
    try:
        server.start()
        yield server.url()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A private PostgreSQL cluster on a free loopback port, for the session (tests/pg.py)."""
    try:
        pg_bin("initdb")
    except FileNotFoundError:
        pytest.fail("PostgreSQL is not installed (make test installs it with apt)")
    # Not tmp_path_factory: pytest keeps its base directory 0700 for root, and resets it at
    # every session start, so the postgres OS user the server runs as could not reach it.
    with tempfile.TemporaryDirectory(prefix="pytest-pg-") as workdir:
        cluster = PostgresCluster(Path(workdir))
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh, uniquely named database in the session cluster; yields its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield postgres_cluster.create_database(name)
    postgres_cluster.drop_database(name)
