"""Argument conditions: operators, JSON paths, and the None ("cannot judge safely") rule.

A verdict of None must never satisfy an allow condition (strict) and must always satisfy a
deny / require_approval condition (lenient); an absent value makes "X" false and "not X" true.
"""

from __future__ import annotations

import math

import pytest

from governance.engine.conditions import (
    WILDCARD,
    Condition,
    ConditionError,
    ConditionSpec,
    compile_test,
    conditions_parse,
    normalise_host,
    normalise_path,
    parse_path,
    url_host,
)

NAN, INF = math.nan, math.inf


def verdict(op, operand, value):
    return compile_test(op, operand)(value)


def holds(arguments, path, op, value, *, strict, negate=False):
    return Condition(ConditionSpec(path, op, value, negate), strict=strict).holds(arguments)


def rejects(op, operand) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        compile_test(op, operand)
    return caught.value


# --- equals / in --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("operand", "value", "expected"),
    [
        ("main", "main", True),
        ("main", "Main", False),
        ("main", "main ", False),
        (1, 1, True),
        (1, 1.0, True),  # JSON numbers: 1 is 1.0
        (1.0, 1, True),
        (1, 2, False),
        (True, True, True),
        (True, 1, False),  # true is not 1
        (1, True, False),
        (False, 0, False),
        (0, False, False),
        (None, None, True),
        (None, "null", False),
        ("1", 1, False),
        (1, "1", False),
        ("", "", True),
        ("main", None, False),
    ],
)
def test_equals_is_json_equality(operand, value, expected):
    assert verdict("equals", operand, value) is expected


@pytest.mark.parametrize("value", [["main"], {"branch": "main"}, [], {}])
def test_equals_cannot_judge_a_list_or_object(value):
    assert verdict("equals", "main", value) is None


@pytest.mark.parametrize("operand", [["main"], {"a": 1}, (1,), object()])
def test_equals_takes_a_scalar(operand):
    assert rejects("equals", operand).field == "value"


@pytest.mark.parametrize(
    ("operand", "value", "expected"),
    [
        (["a", "b"], "a", True),
        (["a", "b"], "c", False),
        (["a", "b"], "A", False),
        ([1, 2], 1.0, True),
        ([1, 2], 3, False),
        ([1], True, False),
        ([True], 1, False),
        ([0], False, False),
        ([False], False, True),
        ([None], None, True),
        (["1"], 1, False),
        ([1, "a", None, True], "a", True),
    ],
)
def test_in_is_membership_by_json_equality(operand, value, expected):
    assert verdict("in", operand, value) is expected


@pytest.mark.parametrize("value", [["a"], {"a": 1}])
def test_in_cannot_judge_a_list_or_object(value):
    assert verdict("in", ["a"], value) is None


@pytest.mark.parametrize("operand", [[], "a", None, [["a"]], [{"a": 1}], {"a": 1}])
def test_in_takes_a_non_empty_list_of_scalars(operand):
    assert rejects("in", operand).field == "value"


def test_a_list_value_cannot_slip_past_a_negated_equals_in_an_allow_rule():
    # allow unless branch is main: ["main"] is not a string to compare, so not allowed.
    assert not holds({"branch": ["main"]}, "$.branch", "equals", "main", strict=True, negate=True)
    assert not holds({"branch": ["main"]}, "$.branch", "in", ["main"], strict=True, negate=True)
    assert holds({"branch": "dev"}, "$.branch", "equals", "main", strict=True, negate=True)
    # and a deny on branch == main applies to it
    assert holds({"branch": ["main"]}, "$.branch", "equals", "main", strict=False)


# --- prefix / glob / regex ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("operand", "value", "expected"),
    [
        ("feature/", "feature/x", True),
        ("feature/", "feature/", True),
        ("feature/", "feature", False),
        ("feature/", "Feature/x", False),
        ("feature/", "x/feature/y", False),
        ("feature/", 5, None),
        ("feature/", None, None),
        ("feature/", ["feature/x"], None),
        ("feature/", True, None),
    ],
)
def test_prefix(operand, value, expected):
    assert verdict("prefix", operand, value) is expected


@pytest.mark.parametrize("op", ["prefix", "glob", "regex", "path_under"])
@pytest.mark.parametrize("operand", ["", 5, None, ["a"]])
def test_string_operators_take_a_non_empty_string(op, operand):
    assert rejects(op, operand).field == "value"


@pytest.mark.parametrize(
    ("glob", "value", "expected"),
    [
        ("*.py", "main.py", True),
        ("*.py", "src/pkg/main.py", True),  # * crosses /
        ("*.py", "main.pyc", False),  # a full match, not a search
        ("*.py", "xmain.py.bak", False),
        ("a.b", "a.b", True),
        ("a.b", "axb", False),  # . is literal
        ("?", "x", True),
        ("?", "", False),
        ("?", "xy", False),
        ("ü?", "üx", True),  # ? is one character, not one byte
        ("??", "ü", False),
        ("[ab]", "[ab]", True),  # [ ] are literal
        ("[ab]", "a", False),
        ("a+", "aa", False),
        ("a+", "a+", True),
        ("(x|y)", "x", False),
        ("\\d", "\\d", True),
        ("\\d", "1", False),
        ("*", "", True),
        ("*", "line\nbreak", True),
        ("x*", "x\ny", True),
        ("*.py", 5, None),
        ("*", None, None),
    ],
)
def test_glob_only_star_and_question_mark_are_special(glob, value, expected):
    assert verdict("glob", glob, value) is expected


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("ma", "xmain", True),  # search, not full match
        ("^main$", "main", True),
        ("^main$", "main\n", False),  # RE2: $ is the end of the text, not before a newline
        ("^main$", "x\nmain", False),  # not multi-line
        ("a.b", "a\nb", True),  # . matches a newline
        ("^[0-9]{3}$", "123", True),
        ("^[0-9]{3}$", "1234", False),
        (r"\p{Greek}", "αβ", True),
        ("(?i)MAIN", "main", True),
        ("x", 5, None),
        ("x", None, None),
        ("x", ["x"], None),
    ],
)
def test_regex(pattern, value, expected):
    assert verdict("regex", pattern, value) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        r"(a)\1",  # backreference
        r"(?P<x>a)(?P=x)",  # named backreference
        r"(?=a)",  # lookahead
        r"(?!a)",
        r"(?<=a)b",  # lookbehind
        r"(?<!a)b",
        r"[",
        r"(",
        r"a{1001}",
        r"*a",
    ],
)
def test_regex_rejects_what_re2_cannot_run_in_linear_time(pattern):
    error = rejects("regex", pattern)
    assert error.field == "value"
    assert "RE2" in error.message
    assert "b'" not in error.message  # RE2's reason as text, not a bytes repr


def test_a_pathological_pattern_finishes_and_is_correct():
    test = compile_test("regex", "(a+)+$")
    assert test("a" * 200_000 + "b") is False
    assert test("a" * 200_000) is True
    nested = compile_test("regex", "^(a|aa)+$")
    assert nested("a" * 100_000 + "!") is False
    assert nested("a" * 100_000) is True


# --- range --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("bounds", "value", "expected"),
    [
        ({"min": 0, "max": 10}, 0, True),
        ({"min": 0, "max": 10}, 10, True),
        ({"min": 0, "max": 10}, 5.5, True),
        ({"min": 0, "max": 10}, 10.000001, False),
        ({"min": 0, "max": 10}, -1, False),
        ({"min": 0}, 10**6, True),
        ({"min": 0}, -0.5, False),
        ({"max": 10}, -(10**6), True),
        ({"max": 10}, 11, False),
        ({"min": 0.5, "max": 0.5}, 0.5, True),
        ({"min": 0, "max": 10}, True, None),  # a boolean is not a number
        ({"min": 0, "max": 10}, False, None),
        ({"min": 0, "max": 10}, "5", None),
        ({"min": 0, "max": 10}, None, None),
        ({"min": 0, "max": 10}, [5], None),
        ({"min": 0, "max": 10}, NAN, None),
        ({"min": 0, "max": 10}, INF, None),
        ({"min": 0}, INF, None),
        ({"max": 10}, -INF, None),
    ],
)
def test_range(bounds, value, expected):
    assert verdict("range", bounds, value) is expected


@pytest.mark.parametrize(
    "bounds",
    [
        {},
        {"min": 1, "max": 0},
        {"min": NAN},
        {"max": INF},
        {"min": -INF},
        {"min": True},
        {"max": False},
        {"min": "1"},
        {"min": None, "max": None},  # no bound at all
        {"lo": 1},
        {"min": 0, "max": 1, "step": 1},
        [0, 10],
        5,
        None,
    ],
)
def test_range_takes_finite_numeric_bounds(bounds):
    assert rejects("range", bounds).field == "value"


def test_range_judges_integers_too_big_for_a_float():
    huge = 10**400  # valid JSON; math.isfinite(huge) would overflow
    assert verdict("range", {"min": 0, "max": 10}, huge) is False
    assert verdict("range", {"max": 10}, -huge) is True
    assert verdict("range", {"min": 0}, huge) is True
    assert holds({"n": huge}, "$.n", "range", {"max": 10}, strict=False, negate=True)


def test_range_accepts_an_integer_bound_too_big_for_a_float():
    test = compile_test("range", {"max": 10**400})
    assert test(10**399) is True
    assert test(10**401) is False


def test_range_with_one_bound_left_null_is_the_other_bound():
    test = compile_test("range", {"min": None, "max": 3})
    assert test(-100) is True
    assert test(4) is False


# --- host_in ------------------------------------------------------------------------------------
GOOD = ["good.com", "*.example.com"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://good.com/x", True),
        ("https://good.com", True),
        ("http://GOOD.COM/", True),
        ("https://good.com./", True),  # trailing dot: the same host
        ("https://good.com:443/x?y#z", True),
        ("https://good.com:/", True),
        ("https://user:pw@good.com/", True),
        ("https://a@b@good.com/", True),  # the last @ ends the user info
        ("  https://good.com/  ", True),
        ("ftp://good.com/file", True),
        ("https://\uff27\uff2f\uff2f\uff24.com/", True),  # fullwidth GOOD folds under IDNA
        ("https://good\uff0ecom/", True),  # fullwidth full stop is a label separator
        ("https://good.com\uff0e/", True),  # ... also as the trailing dot
        ("https://good.com\u3002/", True),  # ideographic full stop
        ("https://api.example.com/", True),
        ("https://a.b.example.com/v1", True),
        ("https://API.Example.COM./", True),
        ("https://example.com/", False),  # *.example.com is subdomains only
        ("https://notexample.com/", False),
        ("https://example.com.evil.com/", False),
        ("https://good.com.evil.com/", False),
        ("https://evilgood.com/", False),
        ("https://good.co/", False),
        ("https://good.com@evil.com/", False),  # user info "good.com", host evil.com
        ("https://good.com%2F@evil.com/", False),
        ("https://evil.com#@good.com", False),
        ("https://evil.com?@good.com", False),
        ("https://evil.com\\@good.com/", None),  # clients disagree on backslashes
        ("https://evil.com\\.good.com/", None),
        ("https://good%2ecom/", None),
        ("https://good.com:99999/", None),  # bad ports
        ("https://good.com:abc/", None),
        ("https://good.com:+80/", None),
        ("https://good.com:-1/", None),
        ("https://good.com:\uff18\uff10/", None),  # fullwidth 80
        ("https://good.com\t/", None),
        ("https://good.com\n.evil.com/", None),
        ("https://good.com\x00.evil.com/", None),
        ("https://good .com/", None),
        ("good.com/path", None),  # no scheme
        ("//good.com/path", None),
        ("mailto:x@good.com", None),
        ("https:///path", None),
        ("https://[good.com]/", None),
        ("https://a..good.com/", None),  # empty label
        ("", None),
        (5, None),
        (None, None),
        (["https://good.com/"], None),
    ],
)
def test_host_in(url, expected):
    assert verdict("host_in", GOOD, url) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1/", True),
        ("http://127.0.0.1.:8080/", True),
        ("http://[::ffff:127.0.0.1]/", True),  # IPv4-mapped IPv6: the same host
        ("http://[::ffff:7f00:1]/", True),
        ("http://127.0.0.2/", False),
        ("http://0x7f.1/", None),  # numeric shorthand clients read as 127.0.0.1
        ("http://0x7f000001/", None),
        ("http://127.1/", None),
        ("http://127.0.1/", None),
        ("http://2130706433/", None),
        ("http://0177.0.0.1/", None),
        ("http://017700000001/", None),
        ("http://127.000.000.001/", None),
        ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", None),  # fullwidth digits
        ("http://0X7F.0.0.1/", None),
    ],
)
def test_host_in_ipv4_and_numeric_shorthand(url, expected):
    assert verdict("host_in", ["127.0.0.1"], url) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://[::1]/", True),
        ("http://[::1]:8080/x", True),
        ("http://[0:0:0:0:0:0:0:1]/", True),
        ("http://[0000::0001]/", True),
        ("http://[::2]/", False),
        ("http://[fe80::1%25eth0]/", None),  # zone ids: %
        ("http://[::1/", None),
        ("http://::1/", None),
    ],
)
def test_host_in_ipv6(url, expected):
    assert verdict("host_in", ["::1"], url) is expected


def test_host_in_entries_are_normalised_like_urls():
    test = compile_test("host_in", ["Bücher.DE.", "[0:0::1]", "*.Example.COM", "::ffff:10.0.0.1"])
    assert test("https://xn--bcher-kva.de/") is True
    assert test("https://BÜCHER.de/") is True
    assert test("https://buecher.de/") is False
    assert test("http://[::1]/") is True
    assert test("https://a.example.com/") is True
    assert test("http://10.0.0.1/") is True


@pytest.mark.parametrize(
    "operand",
    [
        [],
        "good.com",
        [5],
        [""],
        ["*."],
        ["."],
        ["https://good.com"],
        ["good.com/"],
        ["user@good.com"],
        ["good com"],
        ["good%2ecom"],
        ["good\\com"],
        ["0x7f.1"],
        ["127.1"],
        ["a..b"],
        ["fe80::1%eth0"],
        ["example.com:443"],  # hosts only: an entry with a port could never match
        ["x" * 64 + ".com"],  # a label longer than 63
    ],
)
def test_host_in_rejects_what_is_not_a_host(operand):
    assert rejects("host_in", operand).field == "value"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("example.com\uff0e", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::FFFF:127.0.0.1", "127.0.0.1"),
        ("0x7f.1", None),
        ("1.2.3", None),
        ("", None),
        (".", None),
        ("a@b", None),
        ("a b", None),
        ("a\x7fb", None),
    ],
)
def test_normalise_host(host, expected):
    assert normalise_host(host) == expected


def test_url_host_reads_the_host_clients_connect_to():
    assert url_host("https://user@Good.com:8443/p") == "good.com"
    assert url_host("https://evil.com\\@good.com") is None
    assert url_host("not a url") is None


# --- path_under ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/srv/repos", True),
        ("/srv/repos/", True),
        ("/srv/repos/a/b.txt", True),
        ("/srv/repos/a/../b", True),
        ("/srv/repos/./a", True),
        ("/srv//repos//a", True),
        ("/srv/./repos/a", True),
        ("/srv/repos/a/.", True),
        ("/../../srv/repos/a", True),  # .. at the root stays at the root
        ("/srv/repos/...", True),  # three dots are a name
        ("/srv/repos/..a", True),
        ("/srv/repos/café/日本", True),
        ("/srv/repos/../etc/passwd", False),
        ("/srv/repos/..", False),
        ("/srv/repos/../", False),
        ("/srv/repos/a/../../x", False),
        ("/srv/repos/./../x", False),
        ("/srv/repos//../x", False),
        ("/srv/repos-evil", False),  # a prefix is not a parent
        ("/srv/repos-evil/x", False),
        ("/srv/reposx", False),
        ("/srv/repo", False),
        ("/srv", False),
        ("/", False),
        ("//etc/passwd", False),
        ("/etc/passwd", False),
        ("/SRV/repos/a", False),
        ("srv/repos/a", None),  # relative
        ("./srv/repos/a", None),
        ("../srv/repos/a", None),
        ("~/repos", None),
        ("", None),
        ("/srv/repos/%2e%2e/etc", None),  # percent-encoding
        ("/srv/repos/%2E%2E%2Fetc", None),
        ("/srv/repos/..%2fetc", None),
        ("/srv/repos/a%20b", None),
        ("/srv/repos\\..\\..\\etc", None),  # backslashes
        ("/srv/repos/a\\b", None),
        ("/srv/repos/a\x00", None),  # NUL
        ("/srv/repos/a\x00/../../etc", None),
        ("/srv/repos/a\n", None),
        ("/srv/repos/\x7f", None),
        ("/srv/repos/\uff0e\uff0e/etc", None),  # fullwidth full stops
        ("/srv/repos/..\uff0fetc", None),  # fullwidth solidus
        ("/srv/repos/\u2025/etc", None),  # two dot leader → ".."
        ("/srv/repos/\u2024\u2024/etc", None),  # one dot leader
        ("/srv/repos/\ufe52\ufe52/etc", None),  # small full stop
        ("/srv/repos/\u2026", None),  # ellipsis → "..."
        ("/srv/repos/..\uff3c..\uff3cetc", None),  # fullwidth reverse solidus → "\"
        ("/srv/repos/\uff052e\uff052e", None),  # fullwidth percent → "%"
        (5, None),
        (None, None),
        (["/srv/repos/a"], None),
        ({"path": "/srv/repos/a"}, None),
    ],
)
def test_path_under(path, expected):
    assert verdict("path_under", "/srv/repos", path) is expected


def test_path_under_accepts_a_trailing_slash_and_the_root():
    assert verdict("path_under", "/srv/repos/", "/srv/repos/x") is True
    assert verdict("path_under", "/srv/repos/", "/srv/repos-evil") is False
    root = compile_test("path_under", "/")
    assert root("/anything/../at/all") is True
    assert root("/") is True
    assert root("relative") is None
    assert root("/a/%2e") is None


@pytest.mark.parametrize(
    "directory",
    [
        "srv/repos",
        "/srv/../etc",
        "/srv/repos/./x",
        "/srv//repos",
        "//srv",
        "/srv/repos/..",
        "/srv/%2e%2e",
        "/srv/repos\\x",
        "/srv/\uff0e\uff0e",
        "/srv/repos\x00",
    ],
)
def test_path_under_takes_an_absolute_normalised_directory(directory):
    assert rejects("path_under", directory).field == "value"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/a//b/./c/../d/", "/a/b/d"),
        ("//a", "/a"),
        ("///a", "/a"),
        ("/..", "/"),
        ("/a/b/../../..", "/"),
        ("/café", "/café"),
        ("a/b", None),
        ("/a/%2e", None),
        ("/a\\b", None),
        ("/a\x00", None),
        ("/a/\uff0f", None),
        (b"/a", None),
    ],
)
def test_normalise_path(value, expected):
    assert normalise_path(value) == expected


# --- unknown operators, negate ------------------------------------------------------------------
@pytest.mark.parametrize("op", ["eq", "EQUALS", "", None, 5, "contains"])
def test_unknown_operator(op):
    assert rejects(op, "x").field == "op"


@pytest.mark.parametrize("negate", ["yes", 1, None, "true"])
def test_negate_is_a_boolean(negate):
    with pytest.raises(ConditionError) as caught:
        Condition(ConditionSpec("$.a", "equals", 1, negate), strict=True)
    assert caught.value.field == "negate"


# --- JSON paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$.repo_path", ("repo_path",)),
        ("$.a.b", ("a", "b")),
        ("$.a-b_c9", ("a-b_c9",)),
        ("$._x", ("_x",)),
        ("$[0]", (0,)),
        ("$.a[12]", ("a", 12)),
        ("$.a[*]", ("a", WILDCARD)),
        ('$["odd key"]', ("odd key",)),
        ('$["quote \\" here"]', ('quote " here',)),
        ('$["ü"]', ("ü",)),
        ('$[""]', ("",)),
        ('$.a.b[0]["odd key"][*]', ("a", "b", 0, "odd key", WILDCARD)),
        ("$[*][*]", (WILDCARD, WILDCARD)),
    ],
)
def test_parse_path(path, steps):
    assert parse_path(path) == steps


@pytest.mark.parametrize(
    "path",
    [
        "$",  # selects nothing
        "repo_path",
        "$.",
        "$..a",
        "$.1a",
        "$.a b",
        "$['a']",
        '$["a]',
        "$[-1]",
        "$[a]",
        "$[]",
        "$.a[*",
        "$ .a",
        "$.a.",
        "",
        5,
        None,
        ["$.a"],
    ],
)
def test_parse_path_rejects(path):
    with pytest.raises(ConditionError) as caught:
        parse_path(path)
    assert caught.value.field == "path"


def test_a_condition_with_a_bad_path_does_not_compile():
    with pytest.raises(ConditionError) as caught:
        Condition(ConditionSpec("$..a", "equals", 1), strict=False)
    assert caught.value.field == "path"


ARGS = {
    "a": {"b": [{"odd key": ["/srv/repos/x", "/srv/repos/y"]}]},
    "files": ["/srv/repos/a", "/srv/repos/b"],
    "mixed": ["/srv/repos/a", "/etc/passwd"],
    "unsure": ["/srv/repos/a", "/srv/repos/%2e%2e/etc"],
    "empty": [],
    "obj": {"x": "/srv/repos/a", "y": "/etc"},
    "n": 3,
}
UNDER = "/srv/repos"


@pytest.mark.parametrize(
    ("path", "strict", "negate", "expected"),
    [
        # every value passes
        ("$.files[*]", True, False, True),
        ("$.files[*]", False, False, True),
        ("$.files[*]", True, True, False),
        ("$.files[*]", False, True, False),
        # one value fails: an allow needs all, a deny any
        ("$.mixed[*]", True, False, False),
        ("$.mixed[*]", False, False, True),
        ("$.mixed[*]", True, True, False),
        ("$.mixed[*]", False, True, True),
        # one value cannot be judged: never enough to allow, always enough to deny
        ("$.unsure[*]", True, False, False),
        ("$.unsure[*]", False, False, True),
        ("$.unsure[*]", True, True, False),
        ("$.unsure[*]", False, True, True),
        # an object's values
        ("$.obj[*]", True, False, False),
        ("$.obj[*]", False, False, True),
        # deep paths
        ('$.a.b[0]["odd key"][*]', True, False, True),
        ('$.a.b[0]["odd key"][1]', True, False, True),
        ("$.files[1]", True, False, True),
        ("$.mixed[1]", True, False, False),
        ("$.mixed[1]", True, True, True),
        # absent: "X" does not hold, "not X" does, whatever the effect
        ("$.missing", True, False, False),
        ("$.missing", False, False, False),
        ("$.missing", True, True, True),
        ("$.missing", False, True, True),
        ("$.files[9]", True, False, False),
        ("$.files[9]", False, True, True),
        ("$.empty[*]", True, False, False),  # no values is absent
        ("$.empty[*]", False, True, True),
        ("$.n[*]", True, False, False),  # [*] on a number selects nothing
        ("$.files.x", False, False, False),  # a name on a list selects nothing
        ("$.obj[0]", False, False, False),  # an index on an object selects nothing
        ('$.a.b[0]["other key"]', True, True, True),
    ],
)
def test_wildcards_strict_and_lenient(path, strict, negate, expected):
    assert holds(ARGS, path, "path_under", UNDER, strict=strict, negate=negate) is expected


def test_an_element_without_the_key_counts_as_absent_under_a_wildcard():
    # Absent is "X does not hold", so an allow condition fails and a negated deny fires:
    # an element cannot slip past by leaving the key out.
    arguments = {"items": [{"path": "/srv/repos/a"}, {"url": "https://x"}]}
    assert not holds(arguments, "$.items[*].path", "path_under", UNDER, strict=True)
    assert holds(arguments, "$.items[*].path", "path_under", UNDER, strict=False, negate=True)
    assert holds(arguments, "$.items[*].path", "path_under", UNDER, strict=False)
    arguments = {"items": [{"path": "/srv/repos/a"}, {"path": "/srv/repos/b"}]}
    assert holds(arguments, "$.items[*].path", "path_under", UNDER, strict=True)
    arguments = {"items": [{"path": "/srv/repos/a"}, {"path": "/etc"}]}
    assert not holds(arguments, "$.items[*].path", "path_under", UNDER, strict=True)
    assert not holds(
        {"items": [{"url": "x"}]}, "$.items[*].path", "path_under", UNDER, strict=False
    )


def test_a_null_value_is_present():
    assert holds({"x": None}, "$.x", "equals", None, strict=True)
    assert not holds({"x": None}, "$.x", "prefix", "a", strict=True)  # None verdict
    assert holds({"x": None}, "$.x", "prefix", "a", strict=False)
    assert not holds({"x": None}, "$.x", "prefix", "a", strict=True, negate=True)


@pytest.mark.parametrize("arguments", [None, [], "text", 5])
def test_arguments_that_are_not_an_object_select_nothing(arguments):
    assert not holds(arguments, "$.a", "equals", 1, strict=True)
    assert holds(arguments, "$.a", "equals", 1, strict=False, negate=True)


def test_describe_names_the_values_and_the_verdict():
    condition = Condition(ConditionSpec("$.files[*]", "path_under", UNDER), strict=True)
    line = condition.describe(ARGS | {"files": ["/srv/repos/a", "/srv/repos/%2e%2e"]})
    assert line.startswith('$.files[*] path_under "/srv/repos": "/srv/repos/a", ')
    assert "does not hold" in line
    assert "could not be judged safely" in line
    absent = Condition(ConditionSpec("$.branch", "equals", "main", True), strict=True)
    assert absent.describe({}) == '$.branch not equals "main": absent → holds'
    long = Condition(ConditionSpec("$.s", "prefix", "x"), strict=False).describe({"s": "x" * 500})
    assert len(long) < 250
    assert "…" in long


# --- conditions_parse ---------------------------------------------------------------------------
def test_conditions_parse():
    raw = [
        {"path": "$.a", "op": "equals", "value": 1},
        {"path": "$.b", "op": "in", "value": ["x"], "negate": True},
    ]
    specs = conditions_parse(raw)
    assert specs == (
        ConditionSpec("$.a", "equals", 1),
        ConditionSpec("$.b", "in", ["x"], True),
    )
    assert [spec.as_dict() for spec in specs] == raw


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"path": "$.a", "op": "equals", "value": 1}, ""),
        ("[]", ""),
        (None, ""),
        (["x"], "[0]"),
        ([{"path": "$.a", "op": "equals", "value": 1}, 5], "[1]"),
        ([{"path": "$.a", "op": "equals", "value": 1, "not": True}], "[0]"),
        ([{"op": "equals", "value": 1}], "[0].path"),
        ([{"path": "$.a", "value": 1}], "[0].op"),
        ([{"path": "$.a", "op": "equals"}], "[0].value"),
    ],
)
def test_conditions_parse_names_the_faulty_entry(raw, field):
    with pytest.raises(ConditionError) as caught:
        conditions_parse(raw)
    assert caught.value.field == field


def test_conditions_parse_accepts_an_explicit_null_value():
    assert conditions_parse([{"path": "$.a", "op": "equals", "value": None}])[0].value is None
