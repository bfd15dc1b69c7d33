"""The migrations and system checks run on real PostgreSQL, not only on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py`` in a subprocess against ``database_url``."""
    env = {**os.environ, "DATABASE_URL": database_url}
    argv = [sys.executable, "manage.py", *args]
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_migrate_and_check_on_postgres(postgres_url: str) -> None:
    for args in (["migrate", "--noinput"], ["check", "--database", "default"]):
        result = manage(*args, database_url=postgres_url)
        assert result.returncode == 0, f"manage.py {args}:\n{result.stdout}{result.stderr}"
    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            " AND tablename IN ('audit_auditrecord', 'governance_tenant')"
        ).fetchall()
    assert sorted(name for (name,) in rows) == ["audit_auditrecord", "governance_tenant"]
