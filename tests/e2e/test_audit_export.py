"""The audit API on a real gateway (Daphne, ASGI): real tool calls, then their search, their
call story, and an export downloaded over HTTP with Basic auth and verified by the stand-alone
script, as an auditor would, with the key `manage.py audit_public_key` prints."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx2
import pytest

from tests.e2e.conftest import ROOT, Gateway, admin_create, mcp_client

pytestmark = pytest.mark.e2e

ADMIN, PASSWORD = "auditor", "auditor-pw"  # a throwaway login on a test database


@pytest.fixture(scope="module")
def api(gateway: Gateway) -> httpx2.Client:
    admin_create(gateway, ADMIN, PASSWORD)
    return httpx2.Client(base_url=gateway.base, auth=(ADMIN, PASSWORD), timeout=30)


async def calls(gateway: Gateway) -> str:
    """Nine calls by alice, three of them to a time zone no other test names (a tool error);
    returns that zone."""
    marker = f"Nowhere/{uuid.uuid4().hex}"
    async with mcp_client(gateway, gateway.tokens["alice"]) as client:
        for zone in ("Europe/Paris", "Asia/Tokyo", marker) * 3:
            await client.call_tool("time__get_current_time", {"timezone": zone})
    return marker


def verify(path: Path, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "audit" / "chainproof.py"), str(path), f"--public-key={key}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_an_export_over_http_verifies_offline(gateway: Gateway, api, tmp_path):
    marker = await calls(gateway)
    key = gateway.manage("audit_public_key").stdout.strip()
    for format in ("jsonl", "csv"):
        path = tmp_path / f"export.{format}"
        query = {"format": format, "agent": "alice", "q": marker.upper()}
        with api.stream("GET", "/api/v1/tenants/acme/audit/export", params=query) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-disposition"].startswith("attachment;")
            with path.open("wb") as out:
                for piece in response.iter_bytes():
                    out.write(piece)
        result = verify(path, key)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("OK: ")
        # The intent and outcome of each of the three calls, and digests between them.
        assert " 6 records and " in result.stdout
        tampered = path.read_text().replace(marker, "Nowhere/Avalon", 1)
        path.write_text(tampered)
        assert verify(path, key).returncode == 1


async def test_search_and_a_calls_story_over_http(gateway: Gateway, api):
    marker = await calls(gateway)
    page = api.get(
        "/api/v1/tenants/acme/audit/records",
        params={"agent": "alice", "q": marker, "kind": "outcome", "page_size": 2},
    )
    assert page.status_code == 200
    body = page.json()
    assert len(body["results"]) == 2
    assert body["next"].startswith(gateway.base)
    assert api.get(body["next"]).status_code == 200
    call_id = body["results"][0]["call_id"]
    assert body["results"][0]["outcome"] == "tool_error"
    story = api.get(f"/api/v1/tenants/acme/audit/calls/{call_id}").json()
    kinds = [r["kind"] for r in story["records"]]
    assert kinds[0] == "intent"
    assert kinds[-1] == "outcome" or "verdict" in kinds  # slow verdicts may come after
    assert story["records"][0]["arguments"] == {"timezone": marker}
    assert [r["seq"] for r in story["records"]] == sorted(r["seq"] for r in story["records"])
    assert httpx2.get(f"{gateway.base}/api/v1/tenants/acme/audit/records").status_code == 401
