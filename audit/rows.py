"""Stored audit records read back as the chain wrote them, fast: for verification and export.

Rows come raw from the database cursor, with ids and times as the database's text: Django's
per-field converters, and parsing values into objects only to write them back out, cost more
than hashing the record. ``stored_document`` turns such a row into the record's document,
equal to ``record_document`` of the record it was written from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import orjson
from django.db import connection
from django.db.models import QuerySet, TextField
from django.db.models.functions import Cast

from audit.chain import RECORD_ATTRIBUTES
from audit.chainproof import DOCUMENT_FIELDS, JSON_FIELDS, has_float

_AS_TEXT = {"call_id", "started_at", "created_at"}
# The document's columns, in DOCUMENT_FIELDS order, for ``values_list``.
STORED_COLUMNS = tuple(Cast(a, TextField()) if a in _AS_TEXT else a for a in RECORD_ATTRIBUTES)
# In JSON text: a float or an integer that may not fit in 64 bits (or a string like one).
_SUSPECT = re.compile(r"[0-9](?:[.eE]|[0-9]{18})")
_LONG_NUMBER = re.compile(r"[0-9]{19}")
_EMPTY: dict[str, Any] = {"{}": dict, "[]": list}


def raw_rows(query: QuerySet[Any]) -> list[tuple[Any, ...]]:
    """The rows of a ``values_list`` query as the database cursor gives them."""
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def stored_document(values: Sequence[Any]) -> tuple[dict[str, Any], bool]:
    """The document of a raw row's ``STORED_COLUMNS`` values, and whether it holds a float
    (for ``document_digest``). The hot loop of verification: kept lean."""
    document = dict(zip(DOCUMENT_FIELDS, values, strict=True))
    call_id = document["call_id"]
    if len(call_id) == 32:  # SQLite keeps a UUID as 32 hex digits
        document["call_id"] = (
            f"{call_id[:8]}-{call_id[8:12]}-{call_id[12:16]}-{call_id[16:20]}-{call_id[20:]}"
        )
    document["started_at"] = stored_timestamp(document["started_at"])
    document["created_at"] = stored_timestamp(document["created_at"])
    document["flagged"] = bool(document["flagged"])  # SQLite: 0 or 1
    floats = False
    for name in JSON_FIELDS:
        text = document[name]
        if text is None:
            continue
        if not isinstance(text, str):
            text = json.dumps(text)  # a driver that decoded it already
        empty = _EMPTY.get(text)
        if empty is not None:
            document[name] = empty()
            continue
        suspect = _SUSPECT.search(text)
        value = document[name] = _json(text, suspect)
        floats = floats or (suspect is not None and has_float(value))
    return document, floats


def stored_timestamp(text: str) -> str:
    """A stored time's text as the chain writes it: SQLite's "2026-11-24 03:36:22.486123",
    PostgreSQL's "2026-11-24 03:36:22.48+00" (its session is in UTC, trailing zeros cut)."""
    if text.endswith("+00"):
        text = text[:-3]
    elif len(text) == 26:  # SQLite's, with microseconds: the common case
        return f"{text[:10]}T{text[11:]}Z"
    moment, _, fraction = text.partition(".")
    return f"{moment.replace(' ', 'T')}.{fraction:0<6}Z"


def _json(text: str, suspect: re.Match[str] | None) -> Any:
    # orjson reads integers beyond 64 bits as floats; json reads them exactly.
    if suspect is None or _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # lone surrogates
            pass
    return json.loads(text)
