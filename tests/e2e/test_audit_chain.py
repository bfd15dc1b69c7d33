"""The audit chain as a new user meets it: a burst of real tool calls through a real gateway
from several mcp SDK clients at once, `manage.py audit_verify` passing, then tampering done
by hand in the database, each kind reported at the right record."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Gateway, mcp_client, start_server, stop_server

pytestmark = pytest.mark.e2e

CLIENTS, CALLS = 4, 15


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway of its own: these tests tamper with its database."""
    data_dir = tmp_path_factory.mktemp("audit-gateway")
    gw = Gateway(data_dir=data_dir, env={**os.environ, "DATA_DIR": str(data_dir)})
    gw.manage("migrate", "-v0")
    gw.manage("tenant_create", "acme")
    out = gw.manage("agent_create", "--tenant", "acme", "alice").stdout
    gw.tokens["alice"] = out.strip().splitlines()[-1]
    gw.manage(
        "toolserver_add",
        "--tenant",
        "acme",
        "time",
        "--command",
        f"{sys.executable} -m mcp_server_time",
    )
    gw.manage("rule_add", "--tenant", "acme", "--agent", "alice", "--tool", "time__*")
    start_server(gw)
    yield gw
    stop_server(gw)


def sql(gateway: Gateway, statement: str, *params) -> None:
    with contextlib.closing(sqlite3.connect(gateway.data_dir / "orchestrator.sqlite3")) as db:
        db.execute(statement, params)
        db.commit()


async def burst(gateway: Gateway) -> None:
    async def client(n: int) -> None:
        transport = "ws" if n % 2 else "http"
        async with mcp_client(gateway, gateway.tokens["alice"], transport=transport) as c:
            for i in range(CALLS):
                zone = ("Europe/Paris", "Asia/Tokyo", "America/Lima")[i % 3]
                result = await c.call_tool("time__get_current_time", {"timezone": zone})
                assert not result.is_error

    await asyncio.gather(*(client(n) for n in range(CLIENTS)))


def verify(gateway: Gateway) -> tuple[int, str]:
    result = gateway.manage("audit_verify", check=False)
    return result.returncode, result.stdout + result.stderr


async def test_a_burst_of_real_calls_verifies_and_tampering_is_found(gateway: Gateway):
    await burst(gateway)
    calls = gateway.audit("kind = 'outcome' AND outcome = 'ok'")
    assert len(calls) == CLIENTS * CALLS
    code, out = verify(gateway)
    assert code == 0, out
    rows = gateway.audit()
    assert f"acme: OK, {len(rows)} records (seq 1..{len(rows)})" in out

    # An outcome edited by hand: "ok" becomes "tool_error".
    victim = calls[10]
    sql(gateway, "UPDATE audit_auditrecord SET outcome = 'tool_error' WHERE id = ?", victim["id"])
    code, out = verify(gateway)
    assert code == 1
    assert (
        f"acme: BROKEN at seq {victim['seq']} (record id {victim['id']}): its content does not "
        "match its hash: edited"
    ) in out
    sql(gateway, "UPDATE audit_auditrecord SET outcome = 'ok' WHERE id = ?", victim["id"])
    assert verify(gateway)[0] == 0  # put back exactly, it verifies again

    # The tail cut off: the signed head still says how long the chain was.
    last = rows[-1]["seq"]
    sql(gateway, "DELETE FROM audit_auditrecord WHERE seq > ?", last - 3)
    code, out = verify(gateway)
    assert code == 1
    assert (
        f"acme: BROKEN at seq {last - 2}: missing: the signed head is at seq {last} but the "
        f"chain ends at seq {last - 3}"
    ) in out
