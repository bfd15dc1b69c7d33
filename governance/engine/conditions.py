"""Argument conditions: a JSON path into a call's arguments, an operator and its operand.

An operator answers True, False or None for one value. None means the gateway cannot judge
the value safely (a path with ``%`` or ``\\``, a URL whose host is ambiguous, a number where a
string belongs). The rule that owns the condition decides what None counts as: never enough
for an allow, always enough for a deny or require_approval. An odd value can only make a call
less allowed.

Everything that matches text runs on RE2 (linear time), so no rule can stall the gateway.
"""

from __future__ import annotations

import ipaddress
import json
import math
import posixpath
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import re2

Verdict = bool | None
Test = Callable[[Any], Verdict]

OPERATORS = ("equals", "in", "prefix", "glob", "regex", "range", "host_in", "path_under")
WILDCARD = object()  # a [*] step
MISSING = object()  # where a path reaches no value
RE2_OPTIONS = re2.Options()  # quiet on bad patterns; "." matches newlines too
RE2_OPTIONS.log_errors = False
RE2_OPTIONS.dot_nl = True
_PATH_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+|\*)\]|\[("(?:[^"\\]|\\.)*")\]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ConditionError(ValueError):
    """A condition that cannot be compiled; ``field`` is path, op or value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True, slots=True)
class ConditionSpec:
    path: str  # "$.repo_path", "$.files[*]", '$["odd key"]'
    op: str
    value: Any
    negate: bool = False

    def as_dict(self) -> dict[str, Any]:
        data = {"path": self.path, "op": self.op, "value": self.value}
        return {**data, "negate": True} if self.negate else data


_CONDITION_KEYS = {"path", "op", "value", "negate"}


def conditions_parse(raw: Any) -> tuple[ConditionSpec, ...]:
    """Stored or imported conditions (a list of objects) → specs; ConditionError names the
    entry: ``[1].op``."""
    if not isinstance(raw, list):
        raise ConditionError("", "conditions are a list of objects")
    specs = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConditionError(f"[{i}]", 'an object: {"path": ..., "op": ..., "value": ...}')
        if unknown := set(item) - _CONDITION_KEYS:
            raise ConditionError(f"[{i}]", f"unknown keys {sorted(unknown)}")
        for key in ("path", "op", "value"):
            if key not in item:
                raise ConditionError(f"[{i}].{key}", "required")
        specs.append(
            ConditionSpec(item["path"], item["op"], item["value"], item.get("negate", False))
        )
    return tuple(specs)


class Condition:
    """A compiled condition. ``strict`` (allow rules): every selected value must pass and
    None fails. Otherwise (deny, require_approval): any passing or None value is enough."""

    __slots__ = ("negate", "spec", "steps", "strict", "test")

    def __init__(self, spec: ConditionSpec, *, strict: bool) -> None:
        if not isinstance(spec.negate, bool):
            raise ConditionError("negate", "true or false")
        self.spec, self.strict, self.negate = spec, strict, spec.negate
        self.steps = parse_path(spec.path)
        self.test = compile_test(spec.op, spec.value)

    def holds(self, arguments: Any) -> bool:
        values = select(arguments, self.steps)
        if all(v is MISSING for v in values):
            return self.negate  # absent: "X" does not hold, "not X" does
        negate, test = self.negate, self.test
        if self.strict:
            for value in values:
                verdict = False if value is MISSING else test(value)
                if verdict is None or verdict == negate:
                    return False
            return True
        for value in values:
            verdict = False if value is MISSING else test(value)
            if verdict is None or verdict != negate:
                return True
        return False

    def describe(self, arguments: Any) -> str:
        """One line for explanations: the condition, the values it saw, and its verdict."""
        spec = self.spec
        values = select(arguments, self.steps)
        present = [v for v in values if v is not MISSING]
        seen = ", ".join("absent" if v is MISSING else _short(v) for v in values) or "absent"
        verdicts = [self.test(v) for v in present]
        unsure = " (a value could not be judged safely)" if None in verdicts else ""
        word = "holds" if self.holds(arguments) else "does not hold"
        negated = "not " if spec.negate else ""
        return f"{spec.path} {negated}{spec.op} {_short(spec.value)}: {seen} → {word}{unsure}"


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- JSON paths -------------------------------------------------------------------------------
def parse_path(path: Any) -> tuple[Any, ...]:
    """``$.a.b[0]["c d"][*]`` → ("a", "b", 0, "c d", WILDCARD)."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise ConditionError("path", 'a JSON path starting with "$", e.g. "$.repo_path"')
    steps: list[Any] = []
    pos = 1
    while pos < len(path):
        match = _PATH_STEP.match(path, pos)
        if match is None:
            raise ConditionError("path", f"cannot read {path!r} from position {pos}")
        name, index, quoted = match.groups()
        if name is not None:
            steps.append(name)
        elif index is not None:
            steps.append(WILDCARD if index == "*" else int(index))
        else:
            steps.append(json.loads(quoted))
        pos = match.end()
    if not steps:
        raise ConditionError("path", "select an argument, e.g. $.repo_path")
    return tuple(steps)


def select(document: Any, steps: tuple[Any, ...]) -> list[Any]:
    """The values the path reaches, with MISSING where a branch ends early: under ``[*]`` an
    element without the key counts as absent rather than being skipped."""
    if WILDCARD not in steps:  # the common case: one value or none
        value = document
        for step in steps:
            if isinstance(step, int):
                if not (isinstance(value, list) and step < len(value)):
                    return []
            elif not (isinstance(value, dict) and step in value):
                return []
            value = value[step]
        return [value]
    values = [document]
    for step in steps:
        found: list[Any] = []
        for value in values:
            if value is MISSING:
                found.append(MISSING)
            elif step is WILDCARD:
                if isinstance(value, list):
                    found.extend(value)
                elif isinstance(value, dict):
                    found.extend(value.values())
            elif isinstance(step, int):
                ok = isinstance(value, list) and step < len(value)
                found.append(value[step] if ok else MISSING)
            else:
                found.append(value[step] if isinstance(value, dict) and step in value else MISSING)
        values = found
    return values


# --- operators --------------------------------------------------------------------------------
def compile_test(op: Any, operand: Any) -> Test:
    factory = _FACTORIES.get(op) if isinstance(op, str) else None
    if factory is None:
        raise ConditionError("op", f"unknown operator {op!r}; one of {', '.join(OPERATORS)}")
    return factory(operand)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _key(value: Any) -> tuple[str, Any]:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("number", value)
    return (type(value).__name__, value)


def _equals(operand: Any) -> Test:
    if not _is_scalar(operand):
        raise ConditionError("value", "equals takes a string, number, boolean or null")
    key = _key(operand)
    return lambda value: _key(value) == key if _is_scalar(value) else None


def _in(operand: Any) -> Test:
    if not isinstance(operand, list) or not operand or not all(map(_is_scalar, operand)):
        raise ConditionError(
            "value", "in takes a non-empty list of strings, numbers, booleans or nulls"
        )
    keys = frozenset(_key(v) for v in operand)
    return lambda value: _key(value) in keys if _is_scalar(value) else None


def _string_operand(op: str, operand: Any) -> str:
    if not isinstance(operand, str) or not operand:
        raise ConditionError("value", f"{op} takes a non-empty string")
    return operand


def _prefix(operand: Any) -> Test:
    prefix = _string_operand("prefix", operand)
    return lambda value: value.startswith(prefix) if isinstance(value, str) else None


def glob_to_re2(glob: str) -> str:
    """``*`` is any run of characters (``/`` included), ``?`` one character; nothing else is
    special."""
    return "".join(
        ".*" if c == "*" else "." if c == "?" else re2.escape(c) if c.isascii() else c for c in glob
    )


def re2_compile(pattern: str, field: str = "value") -> Any:
    try:
        return re2.compile(pattern, RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise ConditionError(field, f"not an RE2 regular expression: {reason}") from None


def _glob(operand: Any) -> Test:
    regex = re2_compile(glob_to_re2(_string_operand("glob", operand)))
    return lambda value: regex.fullmatch(value) is not None if isinstance(value, str) else None


def _regex(operand: Any) -> Test:
    regex = re2_compile(_string_operand("regex", operand))
    return lambda value: regex.search(value) is not None if isinstance(value, str) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A number that is not NaN or infinite; any int (math.isfinite overflows on huge ints)."""
    return _is_number(value) and (isinstance(value, int) or math.isfinite(value))


def _range(operand: Any) -> Test:
    bounds = operand if isinstance(operand, dict) else {}
    low, high = bounds.get("min"), bounds.get("max")
    if (
        (low is None and high is None)
        or set(bounds) - {"min", "max"}
        or not all(b is None or _is_finite(b) for b in (low, high))
        or (low is not None and high is not None and low > high)
    ):
        raise ConditionError("value", 'range takes {"min": n, "max": n} (either may be left out)')

    def test(value: Any) -> Verdict:
        if not _is_finite(value):
            return None
        return (low is None or value >= low) and (high is None or value <= high)

    return test


def _host_in(operand: Any) -> Test:
    if not isinstance(operand, list) or not operand or not all(isinstance(h, str) for h in operand):
        raise ConditionError(
            "value", 'host_in takes a list of hosts: "example.com", "*.example.com"'
        )
    exact: set[str] = set()
    suffixes: list[str] = []
    for entry in operand:
        wildcard = entry.startswith("*.")
        host = normalise_host(entry[2:] if wildcard else entry)
        if host is None:
            raise ConditionError("value", f"{entry!r} is not a host name or IP address")
        (suffixes.append("." + host) if wildcard else exact.add(host))
    ends = tuple(suffixes)

    def test(value: Any) -> Verdict:
        host = url_host(value)
        if host is None:
            return None
        return host in exact or host.endswith(ends)

    return test


def normalise_host(host: str) -> str | None:
    """Lower-case, IDNA-encoded, no trailing dot; IP addresses in canonical form. None for
    anything a client could read as another host (numeric shorthand like ``0x7f.1``)."""
    host = host.lower().rstrip(".")
    if not host or _CONTROL.search(host) or any(c in host for c in "%\\/@ "):
        return None
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:  # ::ffff:127.0.0.1 reaches 127.0.0.1
        return str(getattr(address, "ipv4_mapped", None) or address)
    try:
        # IDNA maps fullwidth and ideographic full stops to ".": strip the trailing dot again.
        host = host.encode("idna").decode("ascii").rstrip(".")
    except UnicodeError:
        return None
    if not host or ":" in host:
        return None  # a port, or an IPv6 address ipaddress refused
    last = host.rsplit(".", 1)[-1]
    if last.isdigit() or last.startswith("0x"):
        return None  # looks numeric, but not an address ipaddress accepts: ambiguous
    return host


def url_host(value: Any) -> str | None:
    """The host a URL names, or None when it has none or clients could disagree on it."""
    if not isinstance(value, str) or _CONTROL.search(value) or "\\" in value:
        return None
    try:
        parts = urlsplit(value.strip())
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None
    if not parts.scheme or not hostname:
        return None
    return normalise_host(hostname)


def _path_under(operand: Any) -> Test:
    directory = _string_operand("path_under", operand)
    base = normalise_path(directory)
    if base is None or (base != directory.rstrip("/") and base != "/"):
        raise ConditionError("value", "path_under takes an absolute, normalised directory")
    inside = "/" if base == "/" else base + "/"

    def test(value: Any) -> Verdict:
        path = normalise_path(value)
        if path is None:
            return None
        return path == base or path.startswith(inside)

    return test


def normalise_path(value: Any) -> str | None:
    """An absolute POSIX path with ``.``, ``..`` and repeated slashes resolved in its string
    form. None for anything that another layer could read differently: relative paths,
    percent-encoding, backslashes, control characters, or Unicode that NFKC folds into
    ``/``, ``.``, ``%`` or ``\\``."""
    if not isinstance(value, str) or not value.startswith("/"):
        return None
    if "%" in value or "\\" in value or _CONTROL.search(value):
        return None
    if not value.isascii() and unicodedata.normalize("NFKC", value) != value:
        folded = unicodedata.normalize("NFKC", value)
        if any(folded.count(c) != value.count(c) for c in "/.%\\"):
            return None
    return posixpath.normpath(re.sub("/+", "/", value))


_FACTORIES: dict[str, Callable[[Any], Test]] = {
    "equals": _equals,
    "in": _in,
    "prefix": _prefix,
    "glob": _glob,
    "regex": _regex,
    "range": _range,
    "host_in": _host_in,
    "path_under": _path_under,
}
