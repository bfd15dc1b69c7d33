import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from governance.management.commands._util import cli_actor, tenant_by_slug
from governance.models import Membership
from governance.services.members import membership_set


class Command(BaseCommand):
    help = (
        "Give a person a role in a tenant's dashboard and API (reviewer: watch, search, decide "
        "approvals; admin: also revoke tokens and resolve alerts). A new login gets the "
        "password in $MEMBER_PASSWORD, or a generated one, printed once."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--tenant", required=True)
        parser.add_argument(
            "--role", choices=Membership.Role.values, default=Membership.Role.REVIEWER
        )

    def handle(self, *args, username, tenant, role, **options):
        tenant_obj = tenant_by_slug(tenant)
        users = get_user_model()
        user = users.objects.filter(username=username).first()
        password = ""
        if user is None:
            password = os.environ.get("MEMBER_PASSWORD") or secrets.token_urlsafe(12)
            user = users.objects.create_user(username=username, password=password)
        membership_set(tenant=tenant_obj, user=user, role=role, actor=cli_actor())
        self.stdout.write(f"{username} is {role} of tenant {tenant}")
        if password and "MEMBER_PASSWORD" not in os.environ:
            self.stdout.write(f"password (shown once): {password}")
