"""The Celery app: slower checks and background work (used by the guardrail issues)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

app = Celery("orchestrator")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="orchestrator.ping")
def ping() -> str:
    """A liveness probe: `make run` and the tests use it to show the worker is serving."""
    return "pong"
