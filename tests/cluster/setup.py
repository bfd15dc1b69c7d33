"""Set up a cluster's database in one process (migrate, tenant acme, agents, upstreams,
rules) and print the agents' tokens as JSON: ``python -m tests.cluster.setup``, with the
cluster's environment (DATABASE_URL…)."""

from __future__ import annotations

import io
import json
import os
import sys

import django

AGENTS = ("alice", "bob", "carol", "dave")


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    django.setup()
    from django.core.management import call_command

    def run(*args: str) -> str:
        out = io.StringIO()
        call_command(*args, stdout=out)
        return out.getvalue()

    run("migrate", "-v0")
    run("tenant_create", "acme")
    tokens = {a: run("agent_create", "--tenant", "acme", a).split()[-1] for a in AGENTS}
    for name, command in (
        ("time", f"{sys.executable} -m mcp_server_time"),
        ("testkit", f"{sys.executable} tests/e2e/testkit_server.py"),
    ):
        run("toolserver_add", "--tenant", "acme", name, "--command", command)
    run("rule_add", "--tenant", "acme", "--tool", "time__get_current_time")
    for tools in ("time__*", "testkit__*"):
        run("rule_add", "--tenant", "acme", "--agent", "alice", "--tool", tools)
    print(json.dumps(tokens))


if __name__ == "__main__":
    main()
