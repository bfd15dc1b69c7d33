"""The permission engine on a live gateway: policy written as YAML (another process) and in
Django admin (over HTTP) is enforced on an agent that is already connected, within a second;
per-argument rules allow and deny the right calls to a real upstream (mcp-server-git); shadow
rules are recorded, never enforced; the audit record names the rule."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError

from tests.e2e.conftest import (
    TESTKIT,
    Gateway,
    admin_create,
    admin_login,
    list_all,
    mcp_client,
    start_server,
    stop_server,
)

TENANT = "beta"
ADMIN = "policy-admin"
ADMIN_PASSWORD = "policy-admin-pw"  # a throwaway login on a test database


@pytest.fixture(scope="module")
def beta(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tenant beta: agent pat, the git and testkit upstreams, a sandbox repository, no rules."""
    repos = tmp_path_factory.mktemp("repos")
    for name in ("sandbox", "sandbox-evil", "other"):
        subprocess.run(["git", "init", "-q", str(repos / name)], check=True)
        identity = ["-c", "user.name=t", "-c", "user.email=t@example.test"]
        commit = ["commit", "-q", "--allow-empty", "-m", "first"]
        subprocess.run(["git", *identity, "-C", str(repos / name), *commit], check=True)
    gateway.manage("tenant_create", TENANT)
    token = gateway.manage("agent_create", "--tenant", TENANT, "pat").stdout.splitlines()[-1]
    gateway.manage(
        "toolserver_add",
        "--tenant",
        TENANT,
        "git",
        "--command",
        f"{sys.executable} -m mcp_server_git",
    )
    gateway.manage(
        "toolserver_add", "--tenant", TENANT, "testkit", "--command", f"{sys.executable} {TESTKIT}"
    )
    policy = repos / "policy.yaml"
    policy.write_text(policy_yaml(repos))
    return {"token": token, "repos": repos, "policy": policy}


def import_policy(gateway: Gateway, beta: dict[str, Any]) -> None:
    gateway.manage("policy_import", "--tenant", TENANT, str(beta["policy"]))
    time.sleep(1)  # applied within a second: the first test shows it


@pytest.fixture(scope="module")
def imported(gateway: Gateway, beta: dict[str, Any]) -> None:
    import_policy(gateway, beta)


def policy_yaml(repos: Path) -> str:
    return f"""
roles:
  - name: repo-reader
    agents: [pat]
    rules:
      - effect: allow
        resource: "git__git_*"
        conditions:
          - {{path: $.repo_path, op: path_under, value: "{repos / "sandbox"}"}}
        description: the sandbox repository only
      - effect: deny
        resource: git__git_log
        conditions:
          - {{path: $.max_count, op: range, value: {{min: 101}}}}
        description: no huge logs
      - effect: allow
        resource: testkit__visit
        conditions:
          - {{path: $.url, op: host_in, value: [example.com, "*.python.org"]}}
          - {{path: $.max_bytes, op: range, value: {{max: 4096}}}}
        description: documentation sites, small reads
everyone:
  - effect: deny
    resource: git__git_status
    shadow: true
    conditions:
      - {{path: $.repo_path, op: glob, value: "*/sandbox"}}
    description: trying out a ban on status
"""


async def outcome(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[str, Any]:
    """("ok", result) or ("error", MCPError)."""
    try:
        return "ok", await client.call_tool(tool, arguments)
    except MCPError as exc:
        return "error", exc


async def seconds_until(client: Client, tool: str, arguments: dict[str, Any], want: str) -> float:
    """Call repeatedly until the call's outcome is `want`; the seconds it took."""
    start = time.monotonic()
    async with asyncio.timeout(10):
        while (await outcome(client, tool, arguments))[0] != want:
            await asyncio.sleep(0.02)
    return time.monotonic() - start


def rule_ids(gateway: Gateway) -> dict[str, int]:
    """description → id, from the tenant's exported policy."""
    text = gateway.manage("policy_export", "--tenant", TENANT).stdout
    ids = re.findall(r"- id: (\d+)\n(?:.*\n)*?\s+description: (.+)", text)
    return {description.strip(): int(rule_id) for rule_id, description in ids}


async def test_yaml_policy_applies_to_a_connected_agent_within_a_second(gateway, beta, tmp_path):
    sandbox = str(beta["repos"] / "sandbox")
    status = {"repo_path": sandbox}
    empty = tmp_path / "empty.yaml"
    empty.write_text("roles: []\n")
    gateway.manage("policy_import", "--tenant", TENANT, str(empty))
    time.sleep(1)
    async with mcp_client(gateway, beta["token"], transport="ws", mode="legacy") as client:
        kind, refused = await outcome(client, "git__git_status", status)
        assert kind == "error"
        assert refused.code == -32001
        assert "no rule allows tool 'git__git_status'" in refused.error.message

        imported = gateway.manage("policy_import", "--tenant", TENANT, str(beta["policy"])).stdout
        assert "rules: 4 created" in imported
        assert await seconds_until(client, "git__git_status", status, "ok") < 1.0

        ok = (await outcome(client, "git__git_status", status))[1]
        assert not ok.is_error
        assert "On branch" in ok.content[0].text  # a real answer from mcp-server-git
        names = await list_all(client)
        assert {"git__git_status", "git__git_log", "testkit__visit"} <= set(names)
        assert "testkit__echo" not in names


@pytest.mark.parametrize(
    ("tool", "arguments", "allowed"),
    [
        ("git__git_log", {"repo_path": "{sandbox}", "max_count": 5}, True),
        ("git__git_log", {"repo_path": "{sandbox}", "max_count": 500}, False),
        ("git__git_log", {"repo_path": "{sandbox}/../other", "max_count": 5}, False),
        ("git__git_status", {"repo_path": "{sandbox}-evil"}, False),
        ("git__git_status", {"repo_path": "{sandbox}/./"}, True),
        ("git__git_status", {"repo_path": "{sandbox}/%2e%2e/other"}, False),
        ("git__git_status", {}, False),
        ("testkit__visit", {"url": "https://docs.python.org/3/", "max_bytes": 100}, True),
        ("testkit__visit", {"url": "https://EXAMPLE.com./x", "max_bytes": 10}, True),
        # A condition on an absent argument does not hold, whatever the tool's default.
        ("testkit__visit", {"url": "https://example.com/"}, False),
        ("testkit__visit", {"url": "https://docs.python.org/3/", "max_bytes": 10**6}, False),
        ("testkit__visit", {"url": "https://docs.python.org.evil.test/"}, False),
        ("testkit__visit", {"url": "https://evil.test\\@docs.python.org/"}, False),
        ("testkit__visit", {"url": "https://docs.python.org@evil.test/"}, False),
    ],
)
async def test_argument_rules_allow_and_deny_the_right_calls(
    gateway, beta, imported, tool, arguments, allowed
):
    sandbox = str(beta["repos"] / "sandbox")
    arguments = json.loads(json.dumps(arguments).replace("{sandbox}", sandbox))
    async with mcp_client(gateway, beta["token"], transport="http", mode="2026-07-28") as client:
        kind, result = await outcome(client, tool, arguments)
    if allowed:
        assert kind == "ok"
        assert not result.is_error, result
    else:
        assert kind == "error"
        assert result.code == -32001, result.error.message


async def test_the_audit_record_names_the_rule_and_keeps_shadow_verdicts(gateway, beta, imported):
    ids = rule_ids(gateway)
    sandbox = str(beta["repos"] / "sandbox")
    async with mcp_client(gateway, beta["token"], transport="ws", mode="legacy") as client:
        kind, refused = await outcome(
            client, "git__git_log", {"repo_path": sandbox, "max_count": 101}
        )
        assert kind == "error"
        assert refused.error.data["rule"] == ids["no huge logs"]
        assert f"rule {ids['no huge logs']} (no huge logs)" in refused.error.message
        # The shadow rule would deny status on the sandbox; it is only recorded.
        kind, _ = await outcome(client, "git__git_status", {"repo_path": sandbox})
        assert kind == "ok"

    denied = gateway.wait_for_audit(
        "tool = 'git__git_log' AND json_extract(arguments, '$.max_count') = 101", (), 2
    )
    assert {(r["decision"], r["rule_id"]) for r in denied} == {("deny", ids["no huge logs"])}
    shadowed = gateway.wait_for_audit(
        "tool = 'git__git_status' AND json_extract(shadow, '$.effect') = 'deny'", (), 2
    )
    record = shadowed[-1]
    assert record["decision"] == "allow"
    assert record["rule_id"] == ids["the sandbox repository only"]
    assert json.loads(record["shadow"]) == {
        "rules": [ids["trying out a ban on status"]],
        "effect": "deny",
        "rule": ids["trying out a ban on status"],
    }
    assert record["policy_version"] is not None


async def test_a_rule_saved_in_admin_applies_to_a_connected_agent_within_a_second(
    gateway, beta, imported
):
    sandbox = str(beta["repos"] / "sandbox")
    status = {"repo_path": sandbox}
    [tenant] = gateway.query("SELECT id FROM governance_tenant WHERE slug = ?", (TENANT,))
    [agent] = gateway.query("SELECT id FROM governance_agent WHERE name = 'pat'")
    session = await asyncio.to_thread(admin_login, gateway, ADMIN, ADMIN_PASSWORD)
    async with mcp_client(gateway, beta["token"], transport="ws", mode="legacy") as client:
        assert (await outcome(client, "git__git_status", status))[0] == "ok"
        form = {
            "tenant": tenant["id"],
            "effect": "deny",
            "resource_kind": "tool",
            "resource": "git__git_status",
            "description": "status is off for pat",
            "role": "",
            "agent": agent["id"],
            "conditions": "[]",
            "valid_from_0": "",
            "valid_from_1": "",
            "valid_until_0": "",
            "valid_until_1": "",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "_save": "Save",
        }
        saved = await asyncio.to_thread(
            session.post,
            "/admin/governance/rule/add/",
            data=form,
            headers={"Referer": f"{gateway.base}/admin/governance/rule/add/"},
        )
        assert saved.status_code == 302, saved.text[:2000]
        assert await seconds_until(client, "git__git_status", status, "error") < 1.0
        _, refused = await outcome(client, "git__git_status", status)
        assert "status is off for pat" in refused.error.message
        names = await list_all(client)
        assert "git__git_status" not in names  # an unconditional deny hides the tool
        assert "git__git_log" in names
    import_policy(gateway, beta)  # as it was


async def test_a_change_reaches_connected_agents_on_every_gateway_process(gateway, beta, imported):
    """Two gateway processes on one database: a policy change made by a command (a third
    process) is enforced on a connection to each within a second."""
    second = Gateway(data_dir=gateway.data_dir, env=gateway.env)
    start_server(second)
    assert second.process is not None
    status = {"repo_path": str(beta["repos"] / "sandbox")}
    try:
        async with (
            mcp_client(gateway, beta["token"], transport="ws", mode="legacy") as one,
            mcp_client(second, beta["token"], transport="http", mode="2026-07-28") as two,
        ):
            for client in (one, two):
                assert (await outcome(client, "git__git_status", status))[0] == "ok"
            gateway.manage(
                "rule_add", "--tenant", TENANT, "--agent", "pat", "--effect", "deny",
                "--tool", "git__git_status", "--description", "status off everywhere",
            )  # fmt: skip
            waits = await asyncio.gather(
                *(seconds_until(c, "git__git_status", status, "error") for c in (one, two))
            )
            assert max(waits) < 1.0
    finally:
        stop_server(second)
        import_policy(gateway, beta)  # as it was


async def test_the_policy_api_checks_and_refuses_bad_documents_on_the_live_server(
    gateway, beta, imported
):
    """The REST API with HTTP Basic, as a CI pipeline uses it: a check names the rule; a bad
    document is refused with every problem's place, changes nothing, and a connected agent
    goes on as before."""
    await asyncio.to_thread(admin_create, gateway, ADMIN, ADMIN_PASSWORD)
    api = httpx2.Client(
        base_url=f"{gateway.base}/api/v1/tenants/{TENANT}",
        auth=(ADMIN, ADMIN_PASSWORD),
        timeout=10,
    )
    ids = rule_ids(gateway)
    sandbox = str(beta["repos"] / "sandbox")
    status = {"repo_path": sandbox}
    async with mcp_client(gateway, beta["token"], transport="ws", mode="legacy") as client:
        checked = await asyncio.to_thread(
            api.post,
            "/policy/check",
            json={
                "agent": "pat",
                "tool": "git__git_log",
                "arguments": {**status, "max_count": 500},
            },
        )
        assert checked.status_code == 200, checked.text
        assert (checked.json()["decision"], checked.json()["rule_id"]) == (
            "deny",
            ids["no huge logs"],
        )
        before = await asyncio.to_thread(api.get, "/policy")
        bad = (
            "everyone:\n"
            '  - {effect: allow, resource: "git__*",'
            ' conditions: [{path: $.x, op: regex, value: "(?=x)"}]}\n'
            "agents:\n"
            '  nobody: [{effect: deny, resource: "*"}]\n'
        )
        refused = await asyncio.to_thread(
            api.put, "/policy", content=bad, headers={"Content-Type": "application/yaml"}
        )
        assert refused.status_code == 400
        assert {e["location"] for e in refused.json()["errors"]} == {
            "everyone[0].conditions[0].value",
            "agents.nobody",
        }
        broken_yaml = await asyncio.to_thread(
            api.put, "/policy", content="roles: [", headers={"Content-Type": "application/yaml"}
        )
        assert broken_yaml.status_code == 400
        assert broken_yaml.json()["errors"][0]["location"].startswith("line ")
        assert (await asyncio.to_thread(api.get, "/policy")).text == before.text
        assert (await outcome(client, "git__git_status", status))[0] == "ok"
