"""The inline checks, by name, in the order a pipeline runs them: cheap and protective first
(``size`` refuses what is too big to scan before anything scans it). Each lives in its own
module of this package; those modules import from ``base`` and ``patterns`` only."""

from __future__ import annotations

from governance.engine.guardrails.base import InlineCheck
from governance.engine.guardrails.injection import Injection
from governance.engine.guardrails.patterns import DenyPatterns
from governance.engine.guardrails.pii import Pii
from governance.engine.guardrails.schema import Schema
from governance.engine.guardrails.secrets import Secrets
from governance.engine.guardrails.size import Size

INLINE_CHECKS: dict[str, type[InlineCheck]] = {
    check.name: check for check in (Size, Schema, DenyPatterns, Secrets, Pii, Injection)
}
