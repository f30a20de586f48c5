"""Turn JSON values into what the Avro encoder expects, guided by the schema.

JSON has no dates: the producer CLI accepts ``"2026-12-01"`` for an Avro ``date`` and an ISO 8601
instant (``"2026-11-23T09:30:00Z"``) for ``timestamp-millis``; everything else passes through and
the encoder validates it. An envelope's ``event_id`` and ``occurred_at`` may be left out: a fresh
UUID and the current time are filled in, as a producing service would.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from streams.errors import InvalidEvent


def from_json(schema: Any, value: Any, path: str = "") -> Any:
    if isinstance(schema, list):  # union: the first branch that takes the value
        if value is None and "null" in schema:
            return None
        errors = []
        for branch in schema:
            if branch == "null":
                continue
            try:
                return from_json(branch, value, path)
            except InvalidEvent as e:
                errors.append(e.detail)
        raise InvalidEvent(f"{path or 'value'}: fits no branch of the union ({'; '.join(errors)})")
    if isinstance(schema, dict):
        logical = schema.get("logicalType")
        if logical == "date" and isinstance(value, str):
            return _parse(dt.date.fromisoformat, value, path)
        if logical in ("timestamp-millis", "timestamp-micros") and isinstance(value, str):
            instant = _parse(dt.datetime.fromisoformat, value.replace("Z", "+00:00"), path)
            return instant if instant.tzinfo else instant.replace(tzinfo=dt.timezone.utc)
        if schema.get("type") == "record" and isinstance(value, dict):
            out = dict(value)
            for field in schema["fields"]:
                name = field["name"]
                if name in out:
                    out[name] = from_json(field["type"], out[name], f"{path}.{name}" if path else name)
            if schema.get("name") == "tidings.common.Envelope":
                out.setdefault("event_id", str(uuid.uuid4()))
                out.setdefault("occurred_at", dt.datetime.now(dt.timezone.utc))
            return out
        if schema.get("type") == "array" and isinstance(value, list):
            return [from_json(schema["items"], v, f"{path}[{i}]") for i, v in enumerate(value)]
        if schema.get("type") == "map" and isinstance(value, dict):
            return {k: from_json(schema["values"], v, f"{path}.{k}") for k, v in value.items()}
    return value


def _parse(parse: Any, text: str, path: str) -> Any:
    try:
        return parse(text)
    except ValueError:
        raise InvalidEvent(f"{path}: {text!r} is not an ISO 8601 date or time") from None
