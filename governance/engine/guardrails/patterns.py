"""Text scanning shared by the checks that match patterns, and the ``deny_patterns`` check.

A payload's strings are joined by newlines into one ``Haystack`` (built once per payload and
shared by every check), so a check scans all of them in one RE2 pass instead of one call per
string. A ``PatternGroup`` asks the cheap question first: one pass of the alternation of its
patterns over the whole haystack says whether any of them matches anywhere. Only then does it
find out which, and where: each matching pattern is run again on the strings its matches in
the haystack touched, so that a match reaching across two strings, or an anchor that means
something else in the joined text, never yields a wrong span.

Everything runs on RE2, which is linear in the text: no pattern, ours or a tenant's, can stall
the gateway.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Any, ClassVar

import re2

from governance.engine.guardrails.base import (
    ConfigError,
    Context,
    Finding,
    InlineCheck,
    Path,
    Payload,
)

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_FEW_STRINGS = 8  # up to this many strings, scan each rather than narrow down in the haystack


def re2_options(*, max_mem: int = 8 << 20, dot_nl: bool = False, **changes: Any) -> Any:
    """RE2 options: quiet on bad patterns, ``.`` stops at newlines unless ``dot_nl``."""
    options = re2.Options()
    options.log_errors = False
    options.max_mem = max_mem
    options.dot_nl = dot_nl
    for name, value in changes.items():
        setattr(options, name, value)
    return options


def re2_error(exc: Exception) -> str:
    reason = exc.args[0] if exc.args else exc
    return reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)


class Haystack:
    """Every string of a payload joined by ``\\n``, as text (for spans) and as UTF-8 (for the
    one-pass searches). Lone surrogates, which ``json.loads`` lets through and UTF-8 cannot
    encode, are read as U+FFFD: one character for one, so spans still fit the original."""

    __slots__ = ("data", "paths", "starts", "text")

    def __init__(self, strings: Sequence[tuple[Path, str]]) -> None:
        self.paths = [path for path, _ in strings]
        texts = [text for _, text in strings]
        text = "\n".join(texts)
        try:
            data = text.encode()
        except UnicodeEncodeError:
            text = _LONE_SURROGATE.sub("\ufffd", text)
            data = text.encode()
        self.text, self.data = text, data
        starts, offset = [0], 0
        for piece in texts:
            offset += len(piece) + 1
            starts.append(offset)
        self.starts = starts  # string i is text[starts[i]:starts[i + 1] - 1]

    def __len__(self) -> int:
        return len(self.paths)

    def piece(self, index: int) -> str:
        return self.text[self.starts[index] : self.starts[index + 1] - 1]

    def matches(self, regex: Any) -> Iterator[tuple[int, str, Any]]:
        """Every match of ``regex`` inside one string: (string index, the string, match)."""
        if len(self.paths) <= _FEW_STRINGS:
            candidates: Sequence[int] = range(len(self.paths))
        else:
            candidates = self._touched(regex)
        for index in candidates:
            piece = self.piece(index)
            for match in regex.finditer(piece):
                yield index, piece, match

    def _touched(self, regex: Any) -> list[int]:
        """The strings that matches in the joined text touch. A match inside one string is
        found here too (the separator reads as a line end, and ``^``, ``$`` and ``\\b`` see
        it as the strings' own ends would be seen); one that crosses strings only makes them
        candidates, and the per-string pass decides."""
        starts, touched, last = self.starts, [], -1
        for match in regex.finditer(self.text):
            start, end = match.span()
            first = bisect_right(starts, start) - 1
            final = bisect_right(starts, max(start, end - 1)) - 1
            for index in range(max(first, last + 1), min(final, len(self.paths) - 1) + 1):
                touched.append(index)
            last = max(last, final)
        return touched


def haystack(payload: Payload) -> Haystack:
    """The payload's haystack, built on first use and kept with the payload."""
    found: Haystack | None = payload.__dict__.get("_haystack")
    if found is None:
        found = payload.__dict__["_haystack"] = Haystack(payload.shape.strings)
    return found


class PatternGroup:
    """RE2 patterns scanned together. ``search`` yields (pattern index, string index, string,
    match) for every match of every pattern, in pattern order; when none matches, which is the
    common case, that costs one DFA pass over the haystack."""

    __slots__ = ("any", "regexes", "set")

    def __init__(self, patterns: Sequence[str], options: Any) -> None:
        self.regexes = tuple(re2.compile(p, options) for p in patterns)
        self.any = self.set = None
        if patterns:
            alternation = "|".join(f"(?:{p})" for p in patterns)
            self.any = re2.compile(alternation, _without_captures(options))
            # The set only narrows down which patterns to run. If its DFA ran out of memory
            # it answers nothing, and then every pattern runs: slower, never wrong.
            self.set = re2.Set.SearchSet(options)
            for pattern in patterns:
                self.set.Add(pattern)
            self.set.Compile()

    def search(self, hay: Haystack) -> Iterator[tuple[int, int, str, Any]]:
        if self.any is None or not len(hay) or self.any.search(hay.data) is None:
            return
        which = sorted(self.set.Match(hay.data) or ()) or range(len(self.regexes))
        for pattern in which:
            for index, piece, match in hay.matches(self.regexes[pattern]):
                yield pattern, index, piece, match


def _without_captures(options: Any) -> Any:
    copy = re2.Options()
    for name in re2.Options.NAMES:
        setattr(copy, name, getattr(options, name))
    copy.never_capture = True
    return copy


# --- deny_patterns ------------------------------------------------------------------------------
MAX_PATTERNS = 100
MAX_PATTERN_LENGTH = 1000
_PATTERN_MEM = 1 << 20  # per pattern: a pattern too big for this is refused, not truncated
_WHOLE_TEXT_ANCHOR = re.compile(r"\\\\|\\([Az])")  # \A or \z, not an escaped backslash
_MULTILINE_OFF = re.compile(r"\(\?[a-zA-Z]*-[a-zA-Z]*m")
_EMPTY_PROBES = ("", "a", " ", "a b", "\n")


class DenyPatterns(InlineCheck):
    """Block (or redact, or flag) any string that a tenant's RE2 pattern matches.

    Patterns are RE2 syntax (no backreferences or lookaround; every pattern runs in linear
    time). ``^`` and ``$`` match at the start and end of every line of a string, and so at the
    string's own ends; ``\\A`` and ``\\z`` are refused, as is switching that off with
    ``(?-m)``. Case matters unless the pattern says ``(?i)``; ``.`` matches newlines too.
    """

    name = "deny_patterns"
    defaults: ClassVar[Mapping[str, Any]] = {"patterns": []}

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        patterns = self.config["patterns"]
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError("patterns", "a list of RE2 patterns (strings)")
        if len(patterns) > MAX_PATTERNS:
            raise ConfigError("patterns", f"at most {MAX_PATTERNS} patterns, not {len(patterns)}")
        self.group = _deny_group(tuple(patterns))

    def scan(self, payload: Payload, context: Context) -> list[Finding]:
        if not self.group.regexes:
            return []
        hay = haystack(payload)
        return [
            Finding("deny_pattern", hay.paths[index], f"patterns[{pattern}]", match.span())
            for pattern, index, _, match in self.group.search(hay)
        ]


@lru_cache(maxsize=256)  # one compile per distinct pattern list, not per agent and tool
def _deny_group(patterns: tuple[str, ...]) -> PatternGroup:
    options = re2_options(max_mem=_PATTERN_MEM, dot_nl=True)
    sources = []
    for i, pattern in enumerate(patterns):
        field = f"patterns[{i}]"
        if not pattern:
            raise ConfigError(field, "an empty pattern would match every value")
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise ConfigError(field, f"at most {MAX_PATTERN_LENGTH} characters")
        if any(m.group(1) for m in _WHOLE_TEXT_ANCHOR.finditer(pattern)):
            raise ConfigError(field, "\\A and \\z are not supported: use ^ and $ (line ends)")
        if _MULTILINE_OFF.search(pattern):
            raise ConfigError(field, "(?-m) is not supported: ^ and $ always match at line ends")
        source = f"(?m:{pattern})"
        try:
            regex = re2.compile(source, options)
        except re2.error as exc:
            reason = re2_error(exc)
            if "pattern too large" in reason:
                reason = "too large for RE2 (a repetition like {1000} multiplies its size)"
            raise ConfigError(
                field,
                f"not an RE2 regular expression: {reason} "
                "(RE2 has no backreferences and no lookahead or lookbehind)",
            ) from None
        if any(
            (m := regex.search(probe)) is not None and m.end() == m.start()
            for probe in _EMPTY_PROBES
        ):
            raise ConfigError(field, "it can match an empty string, and so every value")
        sources.append(source)
    try:
        return PatternGroup(sources, re2_options(max_mem=32 << 20, dot_nl=True))
    except re2.error as exc:
        raise ConfigError("patterns", f"together too large for RE2: {re2_error(exc)}") from None
