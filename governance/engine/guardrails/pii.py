"""The ``pii`` check: personal data in arguments or results.

Each kind is an RE2 pattern that finds candidates, and a validation in Python that only sees
the candidates: a card number must pass Luhn, an IBAN mod-97, an SSN the rules for numbers
that are issued. The patterns are narrow on purpose, since the default action redacts: ISO
timestamps, UUIDs, git SHAs, semantic versions, epoch numbers and order numbers must pass
untouched.

Kinds: ``email``, ``phone`` (E.164 with a ``+``, or the US forms ``(212) 555-0123`` and
``212-555-0123``), ``card`` (an issuer's prefix and length, plain or in the groups cards are
printed in, Luhn-valid), ``iban`` (known country, mod-97-valid, plain or in groups of four),
``national_id`` (US SSN with dashes, UK National Insurance number) and ``ip`` (IPv4, IPv6;
off by default).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any, ClassVar

from governance.engine.guardrails.base import (
    ConfigError,
    Context,
    Finding,
    InlineCheck,
    Path,
    Payload,
)
from governance.engine.guardrails.patterns import PatternGroup, haystack, re2_options

KINDS = ("email", "phone", "card", "iban", "national_id", "ip")
DEFAULT_KINDS = ("email", "phone", "card", "iban", "national_id")

# kind, pattern, what it is (the finding's detail)
_PATTERNS: tuple[tuple[str, str, str], ...] = (
    (
        "email",
        r"\b[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
        r"[A-Za-z]{2,24}\b",
        "email address",
    ),
    ("phone", r"(?:^|[^\w+])(\+[1-9](?:[ -]?(?:\(\d{1,4}\)|\d)){7,14})\b", "phone number"),
    ("phone", r"(?:^|[^\w(-])(\([2-9]\d{2}\) ?[2-9]\d{2}-\d{4})\b", "phone number"),
    ("phone", r"(?:^|[^\w-])([2-9]\d{2}-[2-9]\d{2}-\d{4})\b", "phone number"),
    ("card", r"\b([2-6]\d{3}(?:[ -]?\d){9,15})\b", "payment card number"),
    ("iban", r"\b([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)\b", "IBAN"),
    ("national_id", r"(?:^|[^\w-])(\d{3}-\d{2}-\d{4})\b", "US social security number"),
    (
        "national_id",
        r"\b([A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D])\b",
        "UK national insurance number",
    ),
    ("ip", r"\b((?:\d{1,3}\.){3}\d{1,3})\b", "IPv4 address"),
    ("ip", r"(?:^|[^\w:.])((?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})", "IPv6 address"),
)


class Pii(InlineCheck):
    name = "pii"
    defaults: ClassVar[Mapping[str, Any]] = {"kinds": list(DEFAULT_KINDS)}

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        kinds = self.config["kinds"]
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
            raise ConfigError("kinds", f"a list of kinds, from: {', '.join(KINDS)}")
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise ConfigError("kinds", f"unknown kind {unknown[0]!r}; known: {', '.join(KINDS)}")
        self.kinds = tuple(k for k in KINDS if k in kinds)
        self.patterns, self.group = _group(self.kinds)

    def scan(self, payload: Payload, context: Context) -> list[Finding]:
        hay = haystack(payload)
        findings = []
        for pattern, index, piece, match in self.group.search(hay):
            kind, _, detail = self.patterns[pattern]
            group = 1 if match.re.groups else 0
            start, end = match.span(group)
            if _VALID[kind](piece, start, end):
                findings.append(Finding(kind, hay.paths[index], detail, (start, end)))
        return _outermost(findings)


def _outermost(findings: list[Finding]) -> list[Finding]:
    """Without findings inside a wider one (``(415) 555-0132`` in ``+1 (415) 555-0132``), in
    the order of their places."""
    by_path: dict[Path, list[Finding]] = {}
    for finding in findings:
        by_path.setdefault(finding.path, []).append(finding)
    kept: list[Finding] = []
    for found in by_path.values():
        reach, widest = -1, (-1, -1)
        for finding in sorted(found, key=lambda f: (f.span[0], -f.span[1]) if f.span else (0, 0)):
            span = finding.span or (0, 0)
            if span[1] <= reach and span != widest:
                continue
            if span[1] > reach:
                reach, widest = span[1], span
            kept.append(finding)
    return kept


@cache
def _group(kinds: tuple[str, ...]) -> tuple[tuple[tuple[str, str, str], ...], PatternGroup]:
    patterns = tuple(p for p in _PATTERNS if p[0] in kinds)
    return patterns, PatternGroup([p[1] for p in patterns], re2_options(max_mem=32 << 20))


# --- validation -------------------------------------------------------------------------------
_IMAGE_SUFFIXES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "avif"})


def _email(text: str, start: int, end: int) -> bool:
    local, _, domain = text[start:end].partition("@")
    if local == "git" or local.startswith(".") or local.endswith(".") or ".." in local:
        return False  # git@github.com:org/repo is an SSH user, not a person
    return domain.rsplit(".", 1)[-1].lower() not in _IMAGE_SUFFIXES  # logo@2x.png


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _phone(text: str, start: int, end: int) -> bool:
    found = text[start:end]
    return 8 <= len(_digits(found)) <= 15 if found.startswith("+") else True


def luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_number_plausible(digits: str) -> bool:
    """Whether an issuer numbers cards so: its prefix (IIN) and length. Visa's 13-digit
    numbers are no longer issued; leaving them out spares epoch milliseconds."""
    size, two, three, four = len(digits), int(digits[:2]), int(digits[:3]), int(digits[:4])
    if digits[0] == "4":  # Visa
        return size in (16, 19)
    if 51 <= two <= 55 or 2221 <= four <= 2720:  # Mastercard
        return size == 16
    if two in (34, 37):  # American Express
        return size == 15
    if 300 <= three <= 305 or two in (36, 38, 39):  # Diners Club
        return 14 <= size <= 19
    if 3528 <= four <= 3589 or two in (62, 65) or four == 6011 or 644 <= three <= 649:
        return 16 <= size <= 19  # JCB, UnionPay, Discover
    if two == 50 or 56 <= two <= 69:  # Maestro
        return 13 <= size <= 19
    return False


def _card(text: str, start: int, end: int) -> bool:
    found = text[start:end]
    digits = _digits(found)
    if not card_number_plausible(digits) or not luhn(digits):
        return False
    separators = {c for c in found if not c.isdigit()}
    if not separators:
        return True
    if len(separators) > 1:
        return False
    groups = [len(g) for g in found.split(separators.pop())]
    if groups in ([4, 6, 5], [4, 6, 4]):  # American Express, Diners Club
        return True
    *fours, last = groups
    return len(fours) >= 3 and all(g == 4 for g in fours) and 1 <= last <= 4


# Countries that issue IBANs, with the length of theirs (ISO 13616 registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_valid(iban: str) -> bool:
    iban = iban.replace(" ", "")
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum() or not iban.isascii():
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _iban(text: str, start: int, end: int) -> bool:
    found = text[start:end]
    if " " in found and any(len(g) != 4 for g in found.split(" ")[:-1]):
        return False
    return iban_valid(found)


def _national_id(text: str, start: int, end: int) -> bool:
    found = text[start:end]
    if "-" in found:  # US SSN: never issued with area 000, 666 or 9xx, group 00, serial 0000
        area, group, serial = found.split("-")
        return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
    prefix = found[:2]  # UK NINO: these prefixes are never allocated
    return prefix not in ("BG", "GB", "KN", "NK", "NT", "TN", "ZZ")


def _ip(text: str, start: int, end: int) -> bool:
    found = text[start:end]
    before = text[start - 1] if start else ""
    after = text[end : end + 2]
    if before == "." or (after[:1] == "." and after[1:2].isdigit()):
        return False  # part of a longer dotted number: a version, an OID
    if ":" in found:
        following = after[:1]
        if found.count(":") < 2 or (following and (following.isalnum() or following in "_:")):
            return False
    try:
        ipaddress.ip_address(found)
    except ValueError:
        return False
    return True


_VALID: dict[str, Callable[[str, int, int], bool]] = {
    "email": _email,
    "phone": _phone,
    "card": _card,
    "iban": _iban,
    "national_id": _national_id,
    "ip": _ip,
}
