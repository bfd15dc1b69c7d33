"""Several gateway processes writing at once keep every chain gap-free: on SQLite (the
embedded default) and on a real PostgreSQL server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROCESSES, CALLERS, RECORDS = 3, 40, 10  # 1,200 records from 120 concurrent callers


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_concurrently_and_verify(env: dict[str, str]) -> None:
    assert manage(env, "migrate", "--noinput").returncode == 0
    for slug in ("acme", "globex"):
        assert manage(env, "tenant_create", slug).returncode == 0
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.audit.chain_writers",
                "acme,globex",
                str(CALLERS),
                str(RECORDS),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert f"wrote {CALLERS * RECORDS} records" in out

    verified = manage(env, "audit_verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Every record made it, and each chain is numbered 1..N without a gap.
    counts = manage(
        env,
        "shell",
        "-c",
        "from audit.models import AuditRecord as R;"
        "print(*(R.objects.filter(tenant__slug=s, kind='intent').count() for s in "
        "('acme', 'globex')))",
    )
    assert counts.stdout.split()[-2:] == [str(PROCESSES * CALLERS * RECORDS // 2)] * 2
    for slug in ("acme", "globex"):
        chain = re.search(rf"{slug}: OK, (\d+) records \(seq 1\.\.(\d+)\)", verified.stdout)
        assert chain is not None, verified.stdout
        assert chain[1] == chain[2]
        assert int(chain[1]) >= PROCESSES * CALLERS * RECORDS // 2

    # An edit by hand, through the database's own SQL, is found at its record.
    tampered = manage(
        env,
        "shell",
        "-c",
        "from django.db import connection;"
        "c = connection.cursor();"
        "c.execute(\"UPDATE audit_auditrecord SET decision = 'deny' WHERE seq = 77 AND "
        "tenant_id = (SELECT id FROM governance_tenant WHERE slug = 'globex')\")",
    )
    assert tampered.returncode == 0, tampered.stderr
    verified = manage(env, "audit_verify", "--tenant", "globex")
    assert verified.returncode == 1
    assert "globex: BROKEN at seq 77 (record id" in verified.stdout
    assert "its content does not match its hash: edited" in verified.stdout


def test_processes_writing_at_once_on_sqlite(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)
    write_concurrently_and_verify(env)


def test_processes_writing_at_once_on_postgresql(postgres_url):
    write_concurrently_and_verify({**os.environ, "DATABASE_URL": postgres_url})
