"""Time as a parameter (DESIGN invariant 4).

Decisions take ``now`` as an argument; agents get it from the worker's ``Clock``. Production uses
the system clock; tests and replays inject their own.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.timezone.utc)
