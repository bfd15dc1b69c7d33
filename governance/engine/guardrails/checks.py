"""The inline checks, by name. Each lives in its own module of this package."""

from __future__ import annotations

from governance.engine.guardrails.base import InlineCheck

INLINE_CHECKS: dict[str, type[InlineCheck]] = {}
