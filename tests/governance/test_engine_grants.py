from fnmatch import fnmatchcase

from hypothesis import given
from hypothesis import strategies as st

from governance.engine.grants import DEFAULT_DENY, decide
from governance.engine.types import GrantRule, exposed_tool_name

names = st.from_regex(r"[a-z]{1,6}__[a-z_]{1,8}", fullmatch=True)
globs = st.one_of(names, st.from_regex(r"[a-z]{0,4}\*(__[a-z*]{0,4})?", fullmatch=True))
grants = st.lists(
    st.builds(
        GrantRule, id=st.integers(1, 99), agent_id=st.none() | st.integers(1, 3), tool_glob=globs
    ),
    max_size=8,
)


@given(grants=grants, agent=st.integers(1, 3), tool=names)
def test_allowed_exactly_when_a_grant_for_the_agent_matches(grants, agent, tool):
    decision = decide(grants, agent_id=agent, tool=tool)
    matching = [g for g in grants if g.agent_id in (None, agent) and fnmatchcase(tool, g.tool_glob)]
    assert decision.allowed == bool(matching)
    if matching:
        assert decision.rule == f"grant:{matching[0].id}"
    else:
        assert decision == DEFAULT_DENY


@given(agent=st.integers(1, 3), tool=names)
def test_default_deny(agent, tool):
    assert not decide([], agent_id=agent, tool=tool).allowed


def test_another_agents_grant_does_not_apply():
    grant = GrantRule(id=1, agent_id=2, tool_glob="*")
    assert not decide([grant], agent_id=1, tool="time__x").allowed
    assert decide([grant], agent_id=2, tool="time__x").allowed


@given(server=st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True), tool=st.text(max_size=30))
def test_exposed_names_are_valid_openai_function_names(server, tool):
    name = exposed_tool_name(server, tool)
    assert name.startswith(f"{server}__")
    assert all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
