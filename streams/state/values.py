"""Stored values of the state tables: JSON that keeps Avro's dates, instants and decimals.

Table values are written as bytes (``value_serializer="raw"``) because Faust decodes a
``value_type=dict`` table back as a model (see ``delivery/ledger.py``). Dates and instants are
tagged so a template reads back the same ``datetime.date`` / aware ``datetime`` the event had:
``{"$date": "2026-12-01"}``, ``{"$ts": "2026-12-01T09:00:00+00:00"}``.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in entity state")
        return {"$ts": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in entity state")


def _hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$ts" in obj:
            return dt.datetime.fromisoformat(obj["$ts"])
        if "$date" in obj:
            return dt.date.fromisoformat(obj["$date"])
        if "$dec" in obj:
            return Decimal(obj["$dec"])
    return obj


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=_default, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(data: bytes | None) -> Any:
    if data is None:
        return None
    return json.loads(data, object_hook=_hook)
