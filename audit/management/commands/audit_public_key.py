from django.core.management.base import BaseCommand

from audit.chainproof import b64encode, key_id
from audit.signing import public_key


class Command(BaseCommand):
    help = (
        "Print the public key that verifies audit checkpoints (base64), for "
        "`python audit/chainproof.py EXPORT --public-key=KEY`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--id", action="store_true", help="also print the key id")

    def handle(self, *args, id, **options):
        key = public_key()
        self.stdout.write(f"{b64encode(key)}  (key id {key_id(key)})" if id else b64encode(key))
