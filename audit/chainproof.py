"""The audit chain's format, and the offline verifier of an export.

This one file is all an auditor needs: it runs on the standard library (plus ``cryptography``
to check signatures), without Django or a database::

    python chainproof.py EXPORT.jsonl --public-key=KEY     # or EXPORT.csv

The gateway imports the same functions, so the format is defined once (docs/audit.md):

- a record's **document** is the object of ``DOCUMENT_FIELDS``; its **digest** is the SHA-256
  of the document's canonical JSON;
- its **hash** is ``SHA-256(prev_hash ‖ digest)`` over the raw 32-byte values, where
  ``prev_hash`` is the hash of the tenant's previous record (``GENESIS`` for the first);
- a **checkpoint** is an Ed25519 signature over the canonical JSON of
  ``{"domain", "tenant", "seq", "hash", "signed_at", "reason"}``.

Canonical JSON is RFC 8785 (JCS) with one extension: integers beyond ±2^53 and integral
numbers of 1e21 and more are written as exact integers, because PostgreSQL's ``jsonb`` turns
``1e21`` into ``1000000000000000000000`` and the hash must not depend on the database.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

try:  # ten times faster than json for the common case; the script runs without it
    import orjson
except ImportError:  # pragma: no cover - an auditor's machine
    orjson = None

GENESIS = "0" * 64
EXPORT_FORMAT = "workingagents-audit-export/1"
CHECKPOINT_DOMAIN = "workingagents-audit-checkpoint/1"

# Every field a record's hash covers, and the type of each (for CSV, which has only text).
DOCUMENT_TYPES: dict[str, str] = {
    "seq": "int",
    "tenant": "int",
    "call_id": "str",
    "kind": "str",
    "agent_id": "int?",
    "agent_name": "str",
    "transport": "str",
    "protocol_era": "str",
    "protocol_version": "str",
    "request_id": "str",
    "tool": "str",
    "arguments": "json",
    "decision": "str",
    "reason": "str",
    "rule_id": "int?",
    "shadow": "json",
    "policy_version": "int?",
    "guardrails": "json",
    "flagged": "bool",
    "outcome": "str",
    "error": "str",
    "result_digest": "str",
    "latency_us": "int?",
    "started_at": "str",
    "created_at": "str",
    "actor": "str",
    "subject": "str",
    "diff": "json",
}
DOCUMENT_FIELDS = tuple(DOCUMENT_TYPES)
JSON_FIELDS = tuple(f for f, kind in DOCUMENT_TYPES.items() if kind == "json")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # always UTC, always microseconds


# --- canonical JSON ----------------------------------------------------------------------------
_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
_ASTRAL = re.compile(rb"[\xf0-\xf4]")  # the lead byte of a UTF-8 character beyond U+FFFF


def canonical(value: Any, *, floats: bool | None = None) -> bytes:
    """RFC 8785 canonical JSON (with the integer extension above) as UTF-8 bytes.

    Without floats, and with no character beyond U+FFFF to upset key order, a sorted compact
    dump is already exactly that; otherwise the careful encoder writes it. ``floats`` says
    whether ``value`` holds a float, when the caller knows (it saves a walk). Lone surrogates
    (JSON allows ``\\ud800``) are kept as they are, byte for byte.
    """
    if has_float(value) if floats is None else floats:
        text = _fast_dumps(_numbers_written(value)) if orjson is not None else None
    else:
        text = _fast_dumps(value)
    if text is not None and (text.isascii() or not _ASTRAL.search(text)):
        return text
    return "".join(_exact(value)).encode("utf-8", "surrogatepass")


def _fast_dumps(value: Any) -> bytes | None:
    if orjson is None:
        return _dumps(value).encode("utf-8", "surrogatepass")
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits, or a lone surrogate
        return None


def _numbers_written(value: Any) -> Any:
    """``value`` with each float already written as RFC 8785 says (an orjson ``Fragment``).
    Only containers and floats are visited: most values are strings, left as they are."""
    kind = type(value)
    if kind is float:
        return orjson.Fragment(number(value))
    if kind is dict:
        return {k: _numbers_written(v) if type(v) in _VISITED else v for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_numbers_written(v) if type(v) in _VISITED else v for v in value]
    return value


_VISITED = {float, dict, list, tuple}


def has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _exact(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("JSON object keys must be strings")
        yield "{"
        # JCS orders keys by their UTF-16 code units, not by code points.
        for i, key in enumerate(sorted(value, key=_utf16)):
            yield ("," if i else "") + _dumps(key) + ":"
            yield from _exact(value[key])
        yield "}"
    elif isinstance(value, list | tuple):
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _exact(item)
        yield "]"
    elif isinstance(value, float):
        yield number(value)
    else:
        yield _dumps(value)


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def number(value: float) -> str:
    """ECMAScript's Number::toString, as RFC 8785 requires, but integral values of 1e21 and
    more as exact integers (the extension above)."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a JSON number")
    if value == 0:
        return "0"
    text = repr(value)
    if "e" not in text and not text.endswith(".0"):
        return text  # most floats: repr's shortest digits are already ECMAScript's form
    if value.is_integer():
        return str(int(Decimal(text)))  # the digits of the shortest repr, then zeros
    # The shortest digits that round-trip (repr), laid out as ECMAScript does:
    # value = 0.DIGITS * 10**n.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    k, n = len(digits), len(digits) + exponent
    sign = "-" if value < 0 else ""
    if 0 < n <= 21:
        return sign + (digits + "0" * (n - k) if k <= n else digits[:n] + "." + digits[n:])
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    body = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{body}e{'+' if n > 1 else '-'}{abs(n - 1)}"


# --- the chain ---------------------------------------------------------------------------------
def document_digest(document: dict[str, Any], *, floats: bool | None = None) -> bytes:
    """The SHA-256 of a record's canonical document. Only its JSON fields can hold a float
    (``floats``, when the caller knows)."""
    if floats is None:
        floats = any(has_float(document[field]) for field in JSON_FIELDS)
    return hashlib.sha256(canonical(document, floats=floats)).digest()


def link(prev_hash: str, digest: bytes) -> str:
    """A record's hash: its predecessor's hash, then its own digest."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + digest).hexdigest()


def checkpoint_message(*, tenant: int, seq: int, hash: str, signed_at: str, reason: str) -> bytes:
    return canonical(
        {
            "domain": CHECKPOINT_DOMAIN,
            "tenant": tenant,
            "seq": seq,
            "hash": hash,
            "signed_at": signed_at,
            "reason": reason,
        }
    )


def key_id(public_key: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def signature_valid(public_key: bytes, message: bytes, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(b64decode(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- exports -----------------------------------------------------------------------------------
# An export is a header, then one entry per sequence number from the first exported record
# to the covering checkpoint: the record itself where it matched the filters, otherwise only
# its digest ("gap"), so the chain can be recomputed end to end; then the checkpoint.
CSV_COLUMNS = ("line", *DOCUMENT_FIELDS, "prev_hash", "hash", "proof")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class ExportReport:
    ok: bool
    message: str
    records: int = 0
    gaps: int = 0


class ExportBroken(Exception):
    pass


def verify_export(lines: Iterable[dict[str, Any]], public_key: bytes) -> ExportReport:
    """Recompute the chain through an export and check the covering checkpoint's signature.

    ``lines`` may be a generator: the export is read once, an entry at a time."""
    counted = _Counted(lines)
    try:
        return _verify_export(iter(counted), public_key)
    except ExportBroken as exc:
        return ExportReport(False, str(exc))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        return ExportReport(False, f"entry {counted.count} is malformed: {what}")


class _Counted:
    """An iterable that counts the entries taken from it (to name a malformed one)."""

    def __init__(self, lines: Iterable[dict[str, Any]]) -> None:
        self._lines = lines
        self.count = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self._lines:
            self.count += 1
            yield line


def _verify_export(lines: Iterator[dict[str, Any]], public_key: bytes) -> ExportReport:
    header = next(lines, None)
    if (
        not isinstance(header, dict)
        or header.get("line") != "header"
        or header.get("format") != EXPORT_FORMAT
    ):
        raise ExportBroken(f"not an audit export: the first line must be a {EXPORT_FORMAT} header")
    tenant = header["tenant"]["id"]
    expected_seq: int = header["first_seq"]
    current: str = header["prev_hash"]
    records = gaps = 0
    for entry in lines:
        kind = entry.get("line")
        if kind == "record":
            document = {field: entry[field] for field in DOCUMENT_FIELDS}
            where = f"record seq {document['seq']}"
            if document["seq"] != expected_seq:
                raise ExportBroken(f"{where}: expected seq {expected_seq}")
            if document["tenant"] != tenant:
                raise ExportBroken(f"{where}: belongs to tenant {document['tenant']}")
            if entry["prev_hash"] != current:
                raise ExportBroken(f"{where}: prev_hash does not match the hash before it")
            current = link(current, document_digest(document))
            if entry["hash"] != current:
                raise ExportBroken(f"{where}: its content does not match its hash")
            records += 1
            expected_seq += 1
        elif kind == "gap":
            if entry["seq"] != expected_seq:
                raise ExportBroken(f"gap at seq {entry['seq']}: expected seq {expected_seq}")
            for digest in entry["digests"]:
                current = link(current, bytes.fromhex(digest))
                expected_seq += 1
                gaps += 1
        elif kind == "checkpoint":
            _check_announced(header, expected_seq - 1, records)
            return _check_end(entry, tenant, expected_seq - 1, current, public_key, records, gaps)
        else:
            raise ExportBroken(f"unknown line {kind!r} after seq {expected_seq - 1}")
    raise ExportBroken(f"the export ends at seq {expected_seq - 1} without its checkpoint")


def _check_announced(header: dict[str, Any], last_seq: int, records: int) -> None:
    """The header's ``last_seq`` and ``records`` (when given) match what the export holds.
    The header is not signed: this names a careless edit plainly, it proves nothing."""
    if header.get("last_seq", last_seq) != last_seq:
        raise ExportBroken(
            f"the header announces the range up to seq {header['last_seq']}, "
            f"but the checkpoint comes after seq {last_seq}"
        )
    if header.get("records", records) != records:
        raise ExportBroken(
            f"the header announces {header['records']} records, but the export holds {records}"
        )


def _check_end(
    checkpoint: dict[str, Any],
    tenant: int,
    last_seq: int,
    current: str,
    public_key: bytes,
    records: int,
    gaps: int,
) -> ExportReport:
    if checkpoint["seq"] != last_seq or checkpoint["hash"] != current:
        raise ExportBroken(
            f"the chain recomputed to seq {last_seq} does not reach the checkpoint "
            f"(seq {checkpoint['seq']})"
        )
    message = checkpoint_message(
        tenant=tenant,
        seq=checkpoint["seq"],
        hash=checkpoint["hash"],
        signed_at=checkpoint["signed_at"],
        reason=checkpoint["reason"],
    )
    if not signature_valid(public_key, message, checkpoint["signature"]):
        raise ExportBroken(
            f"the checkpoint at seq {last_seq} is not signed by key {key_id(public_key)}"
        )
    what = (
        f"{records} records and {gaps} digests chain to"
        if records or gaps
        else "no records matched; the range is empty up to"
    )
    return ExportReport(
        True,
        f"OK: {what} the checkpoint at seq {last_seq}, "
        f"signed by key {key_id(public_key)} at {checkpoint['signed_at']}",
        records,
        gaps,
    )


def read_jsonl(stream: Iterable[str]) -> Iterator[dict[str, Any]]:
    for number_, line in enumerate(stream, 1):
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise ExportBroken(f"line {number_} is not JSON: {exc}") from None


def read_csv(stream: Iterable[str]) -> Iterator[dict[str, Any]]:
    # A gap's 1000 digests, or long arguments, exceed csv's default cell limit (128 KiB).
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    rows = csv.reader(stream)
    if tuple(next(rows, ())) != CSV_COLUMNS:
        raise ExportBroken("not an audit export: unexpected CSV columns")
    for row in rows:
        cells = dict(zip(CSV_COLUMNS, row, strict=True))
        if cells["line"] != "record":
            yield {"line": cells["line"], **json.loads(cells["proof"])}
            continue
        entry: dict[str, Any] = {"line": "record", "prev_hash": cells["prev_hash"]}
        entry["hash"] = cells["hash"]
        for field, kind in DOCUMENT_TYPES.items():
            entry[field] = csv_value(cells[field], kind)
        yield entry


def csv_cell(value: Any, kind: str) -> str:
    if kind == "json":
        text = _dumps(value)
        # A lone surrogate cannot be written as UTF-8: escape it (json reads it back the same).
        return text if text.isascii() or not _SURROGATE.search(text) else json.dumps(value)
    if kind == "bool":
        return "true" if value else "false"
    return "" if value is None else str(value)


def csv_value(cell: str, kind: str) -> Any:
    if kind == "json":
        return json.loads(cell)
    if kind == "bool":
        return cell == "true"
    if kind == "int" or (kind == "int?" and cell != ""):
        return int(cell)
    return None if kind == "int?" else cell


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify an audit export offline.")
    parser.add_argument("export", help="the .jsonl or .csv file the gateway exported")
    parser.add_argument(
        "--public-key",
        required=True,
        help="the gateway's audit public key (manage.py audit_public_key), base64",
    )
    args = parser.parse_args(argv)
    with open(args.export, encoding="utf-8", newline="") as stream:
        first = stream.read(1)
        stream.seek(0)
        lines = read_jsonl(stream) if first == "{" else read_csv(stream)
        report = verify_export(lines, b64decode(args.public_key))
    print(report.message)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
