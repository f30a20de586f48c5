"""Stored values of the state tables: JSON that keeps Avro's dates, instants and decimals.

Table values are written as bytes (``value_serializer="raw"``) because Faust decodes a
``value_type=dict`` table back as a model (see ``delivery/ledger.py``). Dates and instants are
tagged so a template reads back the same ``datetime.date`` / aware ``datetime`` the event had:
``{"$date": "2026-12-01"}``, ``{"$ts": "2026-12-01T09:00:00+00:00"}``.

Reading is on the timers' hot path (a tick that fires ten thousand timers reads ten thousand
states), so ``loads`` parses with orjson, about six times faster than ``json`` with an object
hook, and turns the tags into values in one walk afterwards. Writing is once per event and goes
through orjson too (about five times faster than ``json`` with ``default``), with ``tag`` for dates,
instants and decimals; what orjson would refuse or change goes through ``json`` as before: integers
beyond 64 bits, keys that are not strings and naive datetimes (orjson refuses them, and ``json``
raises or writes what it always wrote) and NaN or Infinity (orjson would write null; found by a
walk over the value, made only when the output has a null at all).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

import orjson


def tag(value: Any) -> Any:
    """The stored form of a value JSON has no type for (``default`` of ``json.dumps``)."""
    last = _last_instant
    if value is last[0]:
        return last[1]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in entity state")
        tagged = {"$ts": value.isoformat()}
        _remember(value, tagged)
        return tagged
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in entity state")


# The last instant tagged and its form (read by the writer at once, never changed). A state's
# instants are often one object, the event's time as _since, _updated_at and a copied field, and
# an aware isoformat costs a microsecond. One tuple, replaced whole: a reader in another thread
# sees a pair that belongs together; the instant is held, so its id is not reused meanwhile.
_last_instant: tuple[Any, Any] = (object(), None)


def _remember(value: dt.datetime, tagged: dict[str, str]) -> None:
    global _last_instant
    _last_instant = (value, tagged)


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
    try:
        raw = orjson.dumps(value, default=tag, option=_PASSTHROUGH)
    except orjson.JSONEncodeError:
        return _dumps_exact(value)
    if b"null" in raw and _non_finite(value):
        return _dumps_exact(value)
    return own_size(raw)


def own_size(raw: bytes) -> bytes:
    """orjson's output copied into a bytes object of its own size, for a value that is kept.

    orjson's result holds far more memory than its length: 4 KiB of RSS for a value of 300 or 500
    bytes, 8 KiB for 1,200 (measured: 100,000 results kept, orjson 3.13). A replay keeps every
    entity's state and timers entry in a dict, where that was most of its memory; the copy costs
    0.3 us.
    """
    return bytes(memoryview(raw))


def _dumps_exact(value: Any) -> bytes:
    return json.dumps(value, default=tag, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# Dates, instants and dataclasses go to ``tag`` as they do with json (orjson would write its own form).
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _non_finite(value: Any) -> bool:
    """Whether ``value`` holds a NaN or an infinite float anywhere (orjson writes them as null).

    Types are compared before any isinstance (four times dearer): states are plain dicts of
    strings, numbers, dates and None, and this walk runs for nearly every state written.
    """
    stack = [value]
    while stack:
        container = stack.pop()
        for item in container.values() if isinstance(container, dict) else container if _is_sequence(container) else (container,):
            t = type(item)
            if t is str or t is int or item is None or t is bool or t is dt.date or t is dt.datetime:
                continue
            if isinstance(item, float):
                if not math.isfinite(item):
                    return True
            elif isinstance(item, dict) or _is_sequence(item):
                stack.append(item)
    return False


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, set, frozenset))


def loads(data: bytes | None) -> Any:
    if data is None:
        return None
    if type(data) is not bytes:
        return json.loads(data, object_hook=_hook)
    try:
        return _untag(orjson.loads(data))
    except (orjson.JSONDecodeError, _Inexact):
        # NaN and Infinity, which json writes; an integer beyond 64 bits, which orjson reads
        # as a float: rare in any state, so the exact, slower path reads the whole value again.
        return json.loads(data, object_hook=_hook)


class _Inexact(Exception):
    pass


_BIG = float(2**63)  # from here on a float may be an integer orjson could not keep


def _untag(value: Any) -> Any:
    """What ``_hook`` would have made of a freshly parsed (hence unshared) value, in place."""
    t = type(value)
    if t is float:
        if value >= _BIG or value <= -_BIG:
            raise _Inexact
        return value
    if t is dict:
        if len(value) == 1:
            tagged = _hook(value)
            if tagged is not value:
                return tagged
        items: Any = value.items()
    elif t is list:
        items = enumerate(value)
    else:
        return value
    for k, v in items:
        t = type(v)
        if t is dict or t is list or t is float:
            value[k] = _untag(v)  # an existing key or index: the dict's size does not change
    return value
