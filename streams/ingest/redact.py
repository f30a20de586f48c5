"""Keep secrets out of the dead-letter topic.

A dead-letter record normally carries the original bytes, so nothing is lost. An event whose
schema marks fields ``"secret": true`` (password-reset links, invitation tokens) is the
exception: once decoded, its dead-letter copy is re-encoded (single-object, newest version) with
those fields replaced by ``[redacted]``, and the ``tidings.redacted`` header names them. The
secret is lost for re-drive, by design: it is short-lived, and the producer can issue a new one.
Bytes that do not decode cannot be inspected and are kept as they are.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"


def redact(record: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(record)
    for path in paths:
        holder: Any = out
        steps = path.split(".")
        for step in steps[:-1]:
            holder = holder.get(step) if isinstance(holder, dict) else None
        if isinstance(holder, dict) and isinstance(holder.get(steps[-1]), str):
            holder[steps[-1]] = REDACTED
    return out
