"""The chain's format: canonical JSON against an independent RFC 8785 implementation."""

from __future__ import annotations

import json
from decimal import Decimal

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from audit.chainproof import canonical, number

JCS_INTEGERS = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
JCS_FLOATS = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: abs(x) < 1e21)
TEXT = st.text(st.characters(exclude_categories=["Cs"]))  # JSON text is valid Unicode
JSON = st.recursive(
    st.none() | st.booleans() | JCS_INTEGERS | JCS_FLOATS | TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=30,
)


@given(JSON)
def test_canonical_is_rfc_8785(value):
    assert canonical(value) == rfc8785.dumps(value)


@given(st.dictionaries(TEXT, JCS_INTEGERS | TEXT, max_size=8))
def test_the_fast_path_and_the_careful_encoder_agree(value):
    assert canonical(value) == canonical(value, floats=True)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_hashes_as_postgresql_jsonb_gives_it_back(value):
    """jsonb keeps the decimal json.dumps wrote and prints it in full, without an exponent:
    1e21 comes back as the integer 1000000000000000000000, 1.5e-07 as 0.00000015."""
    from_jsonb = json.loads(format(Decimal(json.dumps(value)), "f"))
    assert canonical(from_jsonb) == canonical(value)
    assert float(number(value)) == value


def test_integers_beyond_2_53_are_exact():
    assert canonical({"id": 2**70}) == b'{"id":1180591620717411303424}'
    assert canonical(1e21) == canonical(10**21) == b"1000000000000000000000"


def test_keys_sort_by_utf16_code_units():
    # U+1F600 is D83D DE00 in UTF-16, below U+FB01: code-point order would say the opposite.
    assert canonical({"\ufb01": 1, "\U0001f600": 2}) == '{"😀":2,"ﬁ":1}'.encode()


@given(JSON)
def test_without_orjson_the_standard_library_writes_the_same(value):
    """An auditor's machine may lack orjson: chainproof.py alone must agree byte for byte."""
    from audit import chainproof

    fast = canonical(value)
    saved, chainproof.orjson = chainproof.orjson, None
    try:
        assert canonical(value) == fast
    finally:
        chainproof.orjson = saved
