"""The ``size`` check: payloads too big, too deep or too long in one string to handle.

It reads only the payload's ``Shape`` (one iterative walk shared with every other check), so
it costs nothing beyond that walk, and it runs first: a 10 MB string or a 10,000-deep nesting
is refused before any check looks inside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from governance.engine.guardrails.base import ConfigError, Context, Finding, InlineCheck, Payload

_MAX_REPORTED = 5  # long strings named one by one, at most


class Size(InlineCheck):
    name = "size"
    defaults: ClassVar[Mapping[str, Any]] = {
        "max_bytes": 1_048_576,  # every string, keys included (characters: a lower bound)
        "max_depth": 64,
        "max_items": 10_000,  # containers and scalars
        "max_string": 262_144,  # characters in one string
    }

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        for key in self.defaults:
            value = self.config[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(key, "a positive whole number")

    def scan(self, payload: Payload, context: Context) -> list[Finding]:
        shape, config = payload.shape, self.config
        findings = []
        if shape.string_bytes > config["max_bytes"]:
            findings.append(
                Finding("size", (), f"size {shape.string_bytes} exceeds {config['max_bytes']}")
            )
        if shape.depth > config["max_depth"]:
            findings.append(
                Finding("size", (), f"nesting depth {shape.depth} exceeds {config['max_depth']}")
            )
        if shape.items > config["max_items"]:
            findings.append(
                Finding("size", (), f"{shape.items} items exceed {config['max_items']}")
            )
        limit = config["max_string"]
        if shape.string_bytes > limit:  # else no one string can be longer
            long = [(path, len(text)) for path, text in shape.strings if len(text) > limit]
            findings.extend(
                Finding("size", path, f"string of {length} characters exceeds {limit}")
                for path, length in long[:_MAX_REPORTED]
            )
        return findings
