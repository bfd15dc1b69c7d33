import asyncio
import shlex

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

from governance.management.commands._util import cli_actor, key_values, tenant_by_slug
from governance.selectors import tenant_state_get
from governance.services.toolservers import tool_catalog_sync, toolserver_add
from orchestrator.upstream.pool import describe_error, discover_tools


class Command(BaseCommand):
    help = "Add an upstream MCP server (stdio command or streamable-HTTP URL) and list its tools."

    def add_arguments(self, parser):
        parser.add_argument("name", help="prefixes its tools: NAME__tool")
        parser.add_argument("--tenant", required=True)
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--command", dest="cmd", help='e.g. "uvx mcp-server-time"')
        target.add_argument("--url", help="a streamable-HTTP MCP endpoint")
        parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--header", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--timeout", type=float, default=30.0, help="discovery deadline (s)")
        parser.add_argument(
            "--no-discover", action="store_true", help="add without connecting to it now"
        )

    def handle(self, *args, name, tenant, cmd, url, env, header, timeout, no_discover, **options):
        tenant_obj = tenant_by_slug(tenant)
        argv = shlex.split(cmd) if cmd else []
        actor = cli_actor()
        try:
            with transaction.atomic():
                server = toolserver_add(
                    tenant=tenant_obj,
                    name=name,
                    command=argv[0] if argv else "",
                    args=argv[1:],
                    env=key_values(env, "--env"),
                    url=url or "",
                    headers=key_values(header, "--header"),
                    actor=actor,
                )
                if no_discover:
                    tools = []
                else:
                    spec = tenant_state_get(tenant_id=tenant_obj.id).servers[server.id]
                    try:
                        tools = asyncio.run(discover_tools(spec, deadline=timeout))
                    except BaseException as exc:
                        raise CommandError(
                            f"could not list the tools of {name!r}: {describe_error(exc)} "
                            "(nothing was added; --no-discover adds it anyway)"
                        ) from None
                    tool_catalog_sync(server_id=server.id, tools=tools, actor=actor)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        except IntegrityError:
            raise CommandError(f"tool server {name!r} exists already in {tenant!r}") from None
        names = ", ".join(f"{name}__{t['name']}" for t in tools) or "(not listed yet)"
        self.stdout.write(f"added tool server {tenant}/{name}; tools: {names}")
