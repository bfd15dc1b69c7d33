"""The audit signing key (Ed25519, from ``AUDIT_SIGNING_KEY`` or a file in DATA_DIR)."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.conf import settings

from audit.chainproof import b64decode, b64encode, key_id

logger = logging.getLogger(__name__)


class SigningKeyError(Exception):
    pass


@functools.cache
def private_key() -> Ed25519PrivateKey:
    configured = settings.AUDIT_SIGNING_KEY
    seed = b64decode(configured) if configured else _seed_file(settings.DATA_DIR)
    if len(seed) != 32:
        raise SigningKeyError("AUDIT_SIGNING_KEY must be a 32-byte Ed25519 seed, base64")
    return Ed25519PrivateKey.from_private_bytes(seed)


def _seed_file(data_dir: Path) -> bytes:
    """The embedded default's key: made once, readable by its owner alone. Written aside and
    linked into place, so of several processes starting together one wins and all read it."""
    path = data_dir / "audit-signing.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        aside = data_dir / f".audit-signing.key.{os.getpid()}"
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(b64encode(os.urandom(32)) + "\n")
        try:
            os.link(aside, path)
            logger.warning("made an audit signing key in %s (production: AUDIT_SIGNING_KEY)", path)
        except FileExistsError:
            pass
        finally:
            aside.unlink()
    return b64decode(path.read_text().strip())


@functools.cache  # derived from the cached private key: every commit signs
def public_key() -> bytes:
    return private_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@functools.cache
def _own_key_id() -> str:
    return key_id(public_key())


def sign(message: bytes) -> tuple[str, str]:
    """(key id, signature) of ``message``."""
    return _own_key_id(), b64encode(private_key().sign(message))


def trusted_keys() -> dict[str, bytes]:
    """Every public key a checkpoint may be signed with, by key id: the current one first."""
    keys = [public_key(), *(b64decode(k) for k in settings.AUDIT_TRUSTED_KEYS)]
    return {key_id(k): k for k in keys}
