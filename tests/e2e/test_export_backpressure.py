"""A big audit export to a client that stops reading: the real gateway (Daphne) waits for the
client instead of piling the rest of the export up in its memory, then finishes it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.conftest import ROOT, Gateway, admin_create, start_server, stop_server

pytestmark = pytest.mark.e2e

RECORDS = 150_000  # about 75 MB of JSONL
WARM_UP = 10_000  # an export of these first, so modules are loaded before measuring
ADMIN, PASSWORD = "auditor", "auditor-pw"  # a throwaway login on a test database


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir = tmp_path_factory.mktemp("export-gateway")
    gw = Gateway(data_dir=data_dir, env={**os.environ, "DATA_DIR": str(data_dir)})
    gw.manage("migrate", "-v0")
    gw.manage(
        "shell",
        "-c",
        "from governance.models import Tenant; from tests.audit.bulk import chain_bulk; "
        f"chain_bulk(Tenant.objects.create(slug='big'), {RECORDS}); "
        f"chain_bulk(Tenant.objects.create(slug='warm'), {WARM_UP})",
    )
    admin_create(gw, ADMIN, PASSWORD)
    start_server(gw)
    yield gw
    stop_server(gw)


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def test_a_client_that_stops_reading_holds_the_export_back(gateway: Gateway, tmp_path):
    assert gateway.process is not None
    pid = gateway.process.pid
    path = tmp_path / "export.jsonl"
    with httpx2.Client(base_url=gateway.base, auth=(ADMIN, PASSWORD), timeout=120) as client:
        # Warm up first: Django, DRF and the export's modules load on first use.
        assert client.get("/api/v1/tenants/warm/audit/export").is_success
        before = rss(pid)
        with client.stream("GET", "/api/v1/tenants/big/audit/export") as response:
            assert response.status_code == 200
            pieces = response.iter_bytes()
            with path.open("wb") as out:
                out.write(next(pieces))
                # The client reads nothing for a while: without backpressure the gateway
                # would read the whole range meanwhile (it makes ~30k rows/s) and keep it.
                samples = []
                for _ in range(30):
                    samples.append(rss(pid) - before)
                    time.sleep(0.2)
                for piece in pieces:
                    out.write(piece)
    size = path.stat().st_size
    assert size > 60 * 2**20
    # One export in flight holds a few chunks of rows and lines, in the request's own thread
    # (and so its own allocator arena): some tens of MB at once, then no more, however long
    # the range. Without backpressure the growth kept on to 180 MB for this export.
    grown, late = max(samples) / 1024, (max(samples) - samples[7]) / 1024
    assert grown < 50, f"the gateway grew {grown:.0f} MB while the client paused"
    assert late < 8, f"the gateway kept growing ({late:.0f} MB) while the client paused"

    key = gateway.manage("audit_public_key").stdout.strip()
    verified = subprocess.run(
        [sys.executable, str(ROOT / "audit" / "chainproof.py"), str(path), f"--public-key={key}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith(f"OK: {RECORDS} records and 0 digests")
