from hypothesis import given
from hypothesis import strategies as st

from governance.engine.types import exposed_tool_name


@given(server=st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True), tool=st.text(max_size=30))
def test_exposed_names_are_valid_openai_function_names(server, tool):
    name = exposed_tool_name(server, tool)
    assert name.startswith(f"{server}__")
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
