"""What every slow guardrail check shares: its interface, its registry, and the text it reads.

A slow check runs in a Celery worker (``governance/tasks.py``), not in the call: it may load a
model or take a second. It is named like a guardrail row (``injection_similarity``), takes the
text of the payload and the row's config, and returns a ``SlowResult``. Pure: no Django here,
so a check can be tested, timed and reused without a database.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from governance.engine.guardrails.base import ConfigError

MAX_TEXT_CHARS = 64 * 1024  # the most of a payload any slow check reads


@dataclass(frozen=True, slots=True)
class SlowResult:
    """A check's answer. ``detail`` is stored and shown to reviewers: what matched and how
    strongly, never the payload's own text."""

    flagged: bool
    score: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class SlowCheckImpl(ABC):
    """One kind of slow check. Subclasses set ``name`` and ``defaults`` (every config key it
    knows, with its default) and implement ``run``; ``validate`` may tighten the checks on
    values. One instance serves every call of a process, from any thread."""

    name: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = {}

    def configure(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The effective config: the defaults under ``config``. Raises ConfigError."""
        unknown = set(config) - set(self.defaults)
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"unknown key; known: {sorted(self.defaults)}")
        merged = {**self.defaults, **config}
        self.validate(merged)
        return merged

    def validate(self, config: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook
        """Raise ConfigError for a value this check cannot use."""

    def preload(self) -> None:  # noqa: B027 - optional hook
        """Load what ``run`` needs (a model) ahead of the first call; runs in a thread."""

    @abstractmethod
    def run(self, text: str, config: Mapping[str, Any]) -> SlowResult:
        """Check ``text`` (the payload's strings, see ``payload_text``) under ``config`` (as
        ``configure`` returned it)."""


_registry: dict[str, SlowCheckImpl] = {}
_registry_lock = threading.Lock()
_imported: set[str] = set()


def slow_check_register(cls: type[SlowCheckImpl]) -> type[SlowCheckImpl]:
    """Class decorator: make the check available by its name. A later registration of the
    same name replaces the earlier one."""
    with _registry_lock:
        _registry[cls.name] = cls()
    return cls


def slow_check_get(name: str) -> SlowCheckImpl | None:
    return _registry.get(name)


def slow_check_names() -> list[str]:
    return sorted(_registry)


def slow_checks_import(modules: Iterable[str]) -> None:
    """Import the modules that register further checks (a deployment's own, or the tests'),
    each once."""
    for module in modules:
        if module not in _imported:
            importlib.import_module(module)
            _imported.add(module)


def payload_text(payload: Any, *, limit: int = MAX_TEXT_CHARS) -> tuple[str, bool]:
    """Every string value of a JSON payload, in document order, one per line, and whether it
    was cut at ``limit`` characters. Keys are left out: they are the tool's vocabulary, not
    what it says. Iterative, so a deeply nested payload cannot overflow the stack."""
    parts: list[str] = []
    size = 0
    stack: list[Any] = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if not value.strip():
                continue
            room = limit - size
            if room <= 0 or len(value) > room:
                if room > 0:
                    parts.append(value[:room])
                return "\n".join(parts), True
            parts.append(value)
            size += len(value) + 1
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
        elif isinstance(value, list | tuple):
            stack.extend(reversed(value))
    return "\n".join(parts), False
