import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.protocol.jsonrpc import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    JsonRpcError,
    Notification,
    Request,
    Response,
    parse_message,
)

LIMIT = 1024 * 1024


def parse(raw):
    return parse_message(raw, max_bytes=LIMIT)


def test_request_notification_and_response():
    assert parse('{"jsonrpc":"2.0","id":"a","method":"m","params":{"x":1}}') == Request(
        id="a", method="m", params={"x": 1}
    )
    assert parse('{"jsonrpc":"2.0","method":"n"}') == Notification(method="n")
    assert parse('{"jsonrpc":"2.0","id":3,"result":{}}') == Response(id=3)


@pytest.mark.parametrize(
    ("raw", "code", "echoed_id"),
    [
        ("{", PARSE_ERROR, None),
        (b"\xff\xfe", PARSE_ERROR, None),
        ("[]", INVALID_REQUEST, None),
        ("null", INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":5,"method":"m","params":"x"}', INVALID_PARAMS, 5),
        ('{"jsonrpc":"2.0","id":5}', INVALID_REQUEST, 5),
        ('{"jsonrpc":"2.0","id":null,"method":"m"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":1.5,"method":"m"}', INVALID_REQUEST, None),
        ('{"jsonrpc":"2.0","id":1,"method":"m","params":{"v":Infinity}}', PARSE_ERROR, None),
        # A number too large for a double is infinity to Python: refused like Infinity.
        ('{"jsonrpc":"2.0","id":1,"method":"m","params":{"v":1e999}}', PARSE_ERROR, None),
        ('{"jsonrpc":"2.0","id":1,"method":"m","params":{"v":-1e400}}', PARSE_ERROR, None),
    ],
)
def test_invalid_messages(raw, code, echoed_id):
    with pytest.raises(JsonRpcError) as error:
        parse(raw)
    assert error.value.code == code
    assert error.value.response()["id"] == echoed_id
    assert error.value.message


def test_size_limit_counts_bytes():
    raw = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"t": "é" * 600}})
    with pytest.raises(JsonRpcError, match="message too large"):
        parse_message(raw, max_bytes=1000)


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_input_parses_or_raises_a_jsonrpc_error(raw):
    try:
        parse(raw)
    except JsonRpcError as error:
        code = error.code
    else:
        return
    assert code in {PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(st.sampled_from(["jsonrpc", "id", "method", "params", "result"]), json_values)
)
def test_any_json_object_is_classified_or_refused(data):
    try:
        message = parse(json.dumps(data))
    except JsonRpcError:
        return
    assert isinstance(message, Request | Notification | Response)
    if isinstance(message, Request | Notification):
        assert isinstance(message.params, dict)
