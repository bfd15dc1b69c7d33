"""The ``schema`` check: a call's arguments against the tool's pinned input schema.

jsonschema's ``Draft202012Validator`` is the authority, with three changes for a gateway:
``$ref`` never reaches the network (jsonschema's default registry would fetch a remote
reference, so a tool's schema could make the gateway request any URL), and ``pattern`` and
``patternProperties`` (with ``additionalProperties``, which reads them) match with RE2 rather
than Python's ``re``, so a tool's schema cannot stall the gateway with a pattern that
backtracks. A pattern RE2 cannot compile (backreferences, lookaround) makes the check fail,
and its failure mode decides.

jsonschema takes ~200 us for a 3 KB argument object, the whole budget of a call. So a schema
that only uses the common keywords (type, properties, required, additionalProperties, items,
enum and const of scalars, the length, range and count bounds, pattern) is also compiled into
a plain predicate that answers "valid?" in a few microseconds. Only when it says no, or for a
schema that uses anything else, does jsonschema run, and its errors are what the finding
says. The predicate is tested against jsonschema on generated schemas and instances.

Findings never quote the argument's values: they name the place and what the schema wants.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import re2
import referencing
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from governance.engine.guardrails.base import (
    ConfigError,
    Context,
    Finding,
    InlineCheck,
    Payload,
    Stage,
    path_text,
)
from governance.engine.guardrails.patterns import re2_error, re2_options

MAX_ERRORS = 5
_SCANNED_ERRORS = 50  # errors read from jsonschema before picking the first MAX_ERRORS
_DETAIL_LENGTH = 200
_CACHE_SIZE = 512
_NO_REMOTE = referencing.Registry()  # type: ignore[var-annotated]  # resolves nothing remote
_PATTERN_OPTIONS = re2_options(dot_nl=True)


class Schema(InlineCheck):
    name = "schema"
    stages: ClassVar[frozenset[Stage]] = frozenset({Stage.INPUT})
    defaults: ClassVar[Mapping[str, Any]] = {"formats": False}  # assert "format" keywords

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        if not isinstance(self.config["formats"], bool):
            raise ConfigError("formats", "true or false")
        self.formats: bool = self.config["formats"]

    def scan(self, payload: Payload, context: Context) -> list[Finding]:
        schema = context.input_schema
        if schema is None:
            return []
        compiled = _compiled(schema, self.formats)
        instance = payload.value
        if compiled.fast is not None and compiled.fast(instance):
            return []
        try:
            errors = list(
                itertools.islice(compiled.validator.iter_errors(instance), _SCANNED_ERRORS)
            )
        except RecursionError:
            return [Finding("schema", (), "$: arguments nested too deeply to validate")]
        errors.sort(key=_place)
        details = dict.fromkeys(_detail(error) for error in errors)
        return [Finding("schema", (), detail) for detail in list(details)[:MAX_ERRORS]]


# --- compiled schemas ---------------------------------------------------------------------------
class _Compiled:
    __slots__ = ("error", "fast", "schema", "validator")

    def __init__(
        self,
        schema: Any,
        validator: Any = None,
        fast: Callable[[Any], bool] | None = None,
        error: str = "",
    ) -> None:
        self.schema, self.validator, self.fast, self.error = schema, validator, fast, error


_cache: dict[tuple[int, bool], _Compiled] = {}


def _compiled(schema: Any, formats: bool) -> _Compiled:
    """The schema's validator, compiled once. Keyed by identity (the tool catalog keeps one
    schema object per pinned tool); the entry holds the schema, so its id stays its own."""
    key = (id(schema), formats)
    found = _cache.get(key)
    if found is None or found.schema is not schema:
        found = _compile(schema, formats)
        if len(_cache) >= _CACHE_SIZE:
            _cache.pop(next(iter(_cache)), None)  # oldest first
        _cache[key] = found
    if found.error:
        raise SchemaUnusable(found.error)  # an error of the check (its failure mode decides)
    return found


def _compile(schema: Any, formats: bool) -> _Compiled:
    try:
        _Validator.check_schema(schema)
        format_checker = Draft202012Validator.FORMAT_CHECKER if formats else None
        validator = _Validator(schema, registry=_NO_REMOTE, format_checker=format_checker)
        return _Compiled(schema, validator, fast_validator(schema, formats=formats))
    except Exception as exc:  # kept, and raised afresh on every call that uses the schema
        message = getattr(exc, "message", None) or str(exc)
        return _Compiled(schema, error=f"the tool's input schema cannot be used: {message}"[:300])


class SchemaUnusable(Exception):
    """The tool's input schema is not a valid JSON Schema, or needs what the gateway will not
    do (fetch a remote $ref, run a pattern RE2 cannot)."""


# --- RE2 for the keywords that match patterns -------------------------------------------------
_patterns: dict[str, Any] = {}


def _pattern(pattern: str) -> Any:
    regex = _patterns.get(pattern)
    if regex is None:
        try:
            regex = re2.compile(pattern, _PATTERN_OPTIONS)
        except re2.error as exc:
            raise ValueError(f"schema pattern is not RE2: {re2_error(exc)}") from None
        if len(_patterns) >= 4 * _CACHE_SIZE:
            _patterns.clear()
        _patterns[pattern] = regex
    return regex


def _search(regex: Any, text: str) -> bool:
    try:
        return regex.search(text) is not None
    except UnicodeEncodeError:  # lone surrogates: RE2 reads UTF-8
        return regex.search(text.encode(errors="replace").decode()) is not None


def _keyword_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    if validator.is_type(instance, "string") and not _search(_pattern(pattern), instance):
        yield ValidationError(f"does not match {pattern!r}")


def _keyword_pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = _pattern(pattern)
        for key, value in instance.items():
            if _search(regex, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _keyword_additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [_pattern(p) for p in schema.get("patternProperties", {})]
    extras = [
        key
        for key in instance
        if key not in properties and not any(_search(regex, key) for regex in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError("additional properties are not allowed")


_Validator = validators.extend(
    Draft202012Validator,
    {
        "pattern": _keyword_pattern,
        "patternProperties": _keyword_pattern_properties,
        "additionalProperties": _keyword_additional_properties,
    },
)


# --- safe error text ----------------------------------------------------------------------------
def _place(error: Any) -> tuple[Any, ...]:
    """Document order: indexes as numbers ($[2] before $[10]), then the keyword."""
    steps = tuple((0, s, "") if isinstance(s, int) else (1, 0, s) for s in error.absolute_path)
    return (steps, str(error.validator))


def _detail(error: Any) -> str:
    """Where the arguments fail the schema and what the schema wants, without the value."""
    if error.context:  # anyOf / oneOf: the branch that came closest says the most
        meant = [e for e in error.context if e.validator != "type"] or error.context
        deepest = best_match(meant)
        if deepest is not None:
            error = deepest
    text = f"{path_text(tuple(error.absolute_path))}: {_wants(error)}"
    return text if len(text) <= _DETAIL_LENGTH else text[: _DETAIL_LENGTH - 1] + "…"


def _wants(error: Any) -> str:
    keyword, value, instance = error.validator, error.validator_value, error.instance
    if keyword == "type":
        wanted = " or ".join(value) if isinstance(value, list) else value
        return f"expected {wanted}, got {_json_type(instance)}"
    if keyword == "required":
        return error.message  # "'name' is a required property": the name is the schema's
    simple = {
        "enum": f"not one of the allowed values {_short(value)}",
        "const": f"must be {_short(value)}",
        "minLength": f"shorter than {value} characters",
        "maxLength": f"longer than {value} characters",
        "pattern": f"does not match the pattern {_short(value)}",
        "format": f"not a valid {value}",
        "minimum": f"less than {value}",
        "maximum": f"greater than {value}",
        "exclusiveMinimum": f"not greater than {value}",
        "exclusiveMaximum": f"not less than {value}",
        "multipleOf": f"not a multiple of {value}",
        "minItems": f"fewer than {value} items",
        "maxItems": f"more than {value} items",
        "uniqueItems": "items are not unique",
        "minProperties": f"fewer than {value} properties",
        "maxProperties": f"more than {value} properties",
        "additionalProperties": "has properties the schema does not allow",
        "unevaluatedProperties": "has properties the schema does not allow",
        "propertyNames": "has a property name the schema does not allow",
        "dependentRequired": "misses a property another one requires",
        "anyOf": "matches none of the allowed forms",
        "oneOf": "does not match exactly one of the allowed forms",
        "not": "matches a form the schema excludes",
        "contains": "has too few or too many of the items the schema looks for",
        None: "not allowed here",  # the schema false
    }
    return simple.get(keyword, f"fails {keyword}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the fast predicate -------------------------------------------------------------------------
Check = Callable[[Any], bool]
_APPLIED = frozenset(Draft202012Validator.VALIDATORS)  # keywords jsonschema acts on
_FAST = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
    }
)
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _Unsupported(Exception):
    pass


def fast_validator(schema: Any, *, formats: bool = False) -> Check | None:
    """A predicate equal to jsonschema's ``is_valid`` for ``schema``, or None when the schema
    uses a keyword it does not cover (then jsonschema answers every call)."""
    try:
        return _node(schema, formats=formats, root=True)
    except _Unsupported:
        return None


def _node(schema: Any, *, formats: bool, root: bool = False) -> Check:
    if schema is True:
        return _always
    if schema is False:
        return _never
    if not isinstance(schema, dict):
        raise _Unsupported
    dialect = schema.get("$schema")
    if not root and dialect is not None and dialect.rstrip("#") != _DIALECT:
        raise _Unsupported  # jsonschema switches validator there
    applied = _APPLIED.intersection(schema)
    if applied - _FAST - (set() if formats else {"format"}):
        raise _Unsupported
    tests: list[Check] = []
    if "type" in schema:
        tests.append(_type_test(schema["type"]))
    for keyword in ("enum", "const"):
        if keyword in schema:
            allowed = schema[keyword] if keyword == "enum" else [schema[keyword]]
            tests.append(_enum_test(allowed))
    if applied & {"minLength", "maxLength", "pattern"}:
        tests.append(_string_test(schema))
    if applied & {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}:
        tests.append(_number_test(schema))
    if applied & {"items", "minItems", "maxItems"}:
        tests.append(_array_test(schema, formats))
    if applied & {
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
    }:
        tests.append(_object_test(schema, formats))
    if not tests:
        return _always
    if len(tests) == 1:
        return tests[0]
    return lambda value: all(test(value) for test in tests)


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


_TYPES: dict[str, Check] = {
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}


def _type_test(wanted: Any) -> Check:
    names = wanted if isinstance(wanted, list) else [wanted]
    if not all(name in _TYPES for name in names):
        raise _Unsupported
    if len(names) == 1:
        return _TYPES[names[0]]
    tests = [_TYPES[name] for name in names]
    return lambda value: any(test(value) for test in tests)


def _scalar_key(value: Any) -> tuple[str, Any] | None:
    """JSON equality as jsonschema sees it: true is not 1, 1 is 1.0."""
    if value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, bool):
        return ("bool", value)
    if _is_number(value):
        return ("number", value)
    return None


def _enum_test(allowed: Any) -> Check:
    if not isinstance(allowed, list):
        raise _Unsupported
    keys = set()
    for value in allowed:
        key = _scalar_key(value)
        if key is None:
            raise _Unsupported  # arrays and objects: leave their equality to jsonschema
        keys.add(key)

    def test(value: Any) -> bool:
        key = _scalar_key(value)
        return key is not None and key in keys

    return test


def _string_test(schema: Mapping[str, Any]) -> Check:
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    regex = _pattern(schema["pattern"]) if "pattern" in schema else None

    def test(value: Any) -> bool:
        if not isinstance(value, str):
            return True
        size = len(value)
        if size < low or (high is not None and size > high):
            return False
        return regex is None or _search(regex, value)

    return test


def _number_test(schema: Mapping[str, Any]) -> Check:
    low, high = schema.get("minimum"), schema.get("maximum")
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")

    def test(value: Any) -> bool:
        if not _is_number(value):
            return True
        return not (
            (low is not None and value < low)
            or (high is not None and value > high)
            or (above is not None and value <= above)
            or (below is not None and value >= below)
        )

    return test


def _array_test(schema: Mapping[str, Any], formats: bool) -> Check:
    items = _node(schema["items"], formats=formats) if "items" in schema else None
    low, high = schema.get("minItems", 0), schema.get("maxItems")

    def test(value: Any) -> bool:
        if not isinstance(value, list):
            return True
        if len(value) < low or (high is not None and len(value) > high):
            return False
        return items is None or all(items(item) for item in value)

    return test


def _object_test(schema: Mapping[str, Any], formats: bool) -> Check:
    properties = {
        name: _node(sub, formats=formats) for name, sub in schema.get("properties", {}).items()
    }
    required = tuple(schema.get("required", ()))
    additional = schema.get("additionalProperties", True)
    extra = None if additional is True else _node(additional, formats=formats)
    low, high = schema.get("minProperties", 0), schema.get("maxProperties")

    def test(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        if len(value) < low or (high is not None and len(value) > high):
            return False
        for name in required:
            if name not in value:
                return False
        for key, item in value.items():
            check = properties.get(key)
            if check is None:
                if extra is not None and not extra(item):
                    return False
            elif not check(item):
                return False
        return True

    return test
