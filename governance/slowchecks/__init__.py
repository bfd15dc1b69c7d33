"""Slow guardrail checks: run in a Celery worker, never in the call (see base.py)."""

from governance.slowchecks import injection_similarity  # noqa: F401 - registers the check
from governance.slowchecks.base import (
    SlowCheckImpl,
    SlowResult,
    payload_text,
    slow_check_get,
    slow_check_names,
    slow_check_register,
    slow_checks_import,
)

__all__ = [
    "SlowCheckImpl",
    "SlowResult",
    "payload_text",
    "slow_check_get",
    "slow_check_names",
    "slow_check_register",
    "slow_checks_import",
]
