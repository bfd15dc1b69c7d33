"""What every guardrail check shares: the payload it inspects, what it finds, how it is built
from its stored config. Pure: no Django, no I/O.

A check sees a ``Payload`` (the call's arguments, or the tool's result) and returns
``Finding``s. The pipeline (``pipeline.py``) turns findings into a ``Verdict`` by the check's
configured action: block, redact, or flag.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any, ClassVar

Json = Any
Path = tuple[str | int, ...]  # keys and indexes from the payload's root to a value


class Stage(StrEnum):
    INPUT = "input"  # the call's arguments, before the upstream sees them
    OUTPUT = "output"  # the tool's result, before the agent sees it


class Action(StrEnum):
    BLOCK = "block"
    REDACT = "redact"
    FLAG = "flag"


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 - nothing found
    BLOCK = "block"
    REDACT = "redact"
    FLAG = "flag"
    ERROR = "error"  # the check itself failed; its failure mode decided what happened


class ConfigError(ValueError):
    """A check's stored config that cannot be used; ``field`` names the key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"config.{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a check found. ``detail`` is safe to store and show: never the secret or the
    personal data itself. ``span`` is where in the string at ``path`` it was found, for
    redaction; None when the finding is about the payload as a whole (a schema error)."""

    kind: str  # "email", "aws_access_key", "override_phrase", "schema", "depth", ...
    path: Path = ()
    detail: str = ""
    span: tuple[int, int] | None = None

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"kind": self.kind, "path": path_text(self.path)}
        if self.detail:
            record["detail"] = self.detail
        return record


def path_text(path: Path) -> str:
    """``("files", 0, "name")`` as ``$.files[0].name``."""
    return "$" + "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path)


@dataclass(frozen=True, slots=True)
class Context:
    """What a check may know about the call besides the payload."""

    stage: Stage
    tool: str  # the exposed name, ``git__git_status``
    input_schema: Mapping[str, Any] | None = None  # the tool's pinned JSON Schema


@dataclass(slots=True)
class Shape:
    """Measures of a payload, taken in one iterative walk (no recursion: a 10,000-deep
    payload must not overflow the stack)."""

    depth: int = 0
    items: int = 0  # containers and scalars
    string_bytes: int = 0  # UTF-8 size of every string, keys included
    strings: list[tuple[Path, str]] = field(default_factory=list)  # every string value


class Payload:
    """The value a stage inspects, measured once and shared by every check."""

    __slots__ = ("__dict__", "value")

    def __init__(self, value: Json) -> None:
        self.value = value

    @cached_property
    def shape(self) -> Shape:
        shape = Shape()
        stack: list[tuple[Path, Json, int]] = [((), self.value, 1)]
        strings = shape.strings
        while stack:
            path, value, depth = stack.pop()
            shape.items += 1
            if depth > shape.depth:
                shape.depth = depth
            if isinstance(value, str):
                strings.append((path, value))
                shape.string_bytes += len(value)  # characters: a cheap lower bound on bytes
            elif isinstance(value, dict):
                for key, item in value.items():
                    shape.string_bytes += len(key)
                    stack.append(((*path, key), item, depth + 1))
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    stack.append(((*path, index), item, depth + 1))
        strings.reverse()  # document order, as the stack pops last-first
        return shape

    def clipped(self, limit: int) -> Json:
        """The value with every string longer than ``limit`` cut there and marked; the value
        itself when none is that long (the usual case: no copy). What the audit trail keeps is
        clipped, so one agent's megabyte of arguments does not ride in everyone's commits."""
        cuts = {
            path: f"{text[:limit]}…[{len(text) - limit} more characters not kept]"
            for path, text in self.shape.strings
            if len(text) > limit
        }
        return self.replaced(cuts) if cuts else self.value

    def replaced(self, replacements: Mapping[Path, str]) -> Json:
        """A copy of the value with the strings at these paths replaced. Only the containers
        on the way to a replaced string are copied (iteratively: ``copy.deepcopy`` recurses,
        and overflows the stack on a deeply nested payload); the rest is shared, and the
        original value is left as it was."""
        if () in replacements:
            return replacements[()]
        value = copy.copy(self.value)
        fresh = {id(value)}  # the containers copied so far (all kept alive by ``value``)
        for path, text in replacements.items():
            parent = value
            for step in path[:-1]:
                child = parent[step]
                if id(child) not in fresh:
                    child = parent[step] = copy.copy(child)
                    fresh.add(id(child))
                parent = child
            parent[path[-1]] = text
        return value


class InlineCheck(ABC):
    """A guardrail that runs inside the call: microseconds, no I/O.

    Subclasses set ``name`` and ``stages``, validate their config in ``__init__`` (raise
    ``ConfigError``), and implement ``scan``. ``redact`` replaces each finding's span with
    ``[REDACTED:<kind>]``; a check whose findings have no span (schema, size) cannot redact,
    and its ``redact`` action blocks instead.
    """

    name: ClassVar[str]
    stages: ClassVar[frozenset[Stage]] = frozenset(Stage)
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, config: Mapping[str, Any]) -> None:
        unknown = set(config) - set(self.defaults)
        if unknown:
            raise ConfigError(sorted(unknown)[0], f"unknown key; known: {sorted(self.defaults)}")
        self.config = {**self.defaults, **config}

    @abstractmethod
    def scan(self, payload: Payload, context: Context) -> list[Finding]:
        """What this check finds in the payload; empty when it passes."""

    def redact(self, payload: Payload, findings: list[Finding]) -> Json | None:
        """The payload with the findings replaced, or None when they cannot be."""
        by_path: dict[Path, list[Finding]] = {}
        for finding in findings:
            if finding.span is None:
                return None
            by_path.setdefault(finding.path, []).append(finding)
        texts = dict(payload.shape.strings)
        replacements = {}
        for path, found in by_path.items():
            # Overlapping spans merge into one, replaced as the longest of them would be.
            merged: list[tuple[int, int, Finding]] = []
            for finding in sorted(found, key=lambda f: f.span or (0, 0)):
                start, stop = finding.span or (0, 0)
                if start >= stop:
                    continue
                if merged and start < merged[-1][1]:
                    first, last, widest = merged[-1]
                    wide = widest.span or (0, 0)
                    if stop - start > wide[1] - wide[0]:
                        widest = finding
                    merged[-1] = (first, max(last, stop), widest)
                else:
                    merged.append((start, stop, finding))
            text, parts, done = texts[path], [], 0
            for start, stop, finding in merged:
                parts += [text[done:start], self.replacement(finding)]
                done = stop
            parts.append(text[done:])
            replacements[path] = "".join(parts)
        return payload.replaced(replacements)

    def replacement(self, finding: Finding) -> str:
        return f"[REDACTED:{finding.kind}]"
