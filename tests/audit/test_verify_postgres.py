"""Parallel verification on PostgreSQL through Django's connection pool, in a real process:
the pool's open connections must not be inherited by the forked verifiers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import django
django.setup()
import audit.verify
from audit.verify import chain_verify
from governance.models import Tenant
from tests.audit.bulk import chain_bulk

audit.verify.CHUNK = 10  # several parts from a few hundred records
tenant = Tenant.objects.create(slug="pooled")  # no change records: bulk starts at seq 1
chain_bulk(tenant, 300)  # the pool now holds an open connection
for _ in range(3):
    report = chain_verify(tenant=tenant, jobs=2)
    assert report.ok, report.broken
print(report.records, len(audit.verify._parts(0, 300, 2)))
"""


def test_verify_with_two_jobs_on_pooled_postgresql(postgres_url, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": postgres_url,
        "DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
    }
    manage = [sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"]
    subprocess.run(manage, env=env, cwd=ROOT, check=True)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["300", "2"]
