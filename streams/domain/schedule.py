"""When a timed trigger is due: the schedule arithmetic of date, relative, absence and recurring triggers.

Pure functions (DESIGN invariant 4): nothing here reads a clock, ``now`` is an argument, and every
instant returned is an aware UTC ``datetime``, so timer keys, comparisons and logs never mix zones.
Only the standard library is imported; rules and the timer agents call this, never the reverse.

Two kinds of offset, on purpose:

- *calendar* offsets ("x days before move-out", "every Wednesday at 09:00") are counted in the
  recipient's local calendar and then pinned to a local wall-clock time, so a reminder arrives at
  09:00 local on both sides of a DST change (``date_due``, ``relative_due``, ``next_weekly``);
- *elapsed* offsets ("24 hours before the appointment", "no heartbeat for 15 minutes") are real
  time, so the promised lead time or the silence is exactly what passed (``before_instant``,
  ``absence_due``).

Wall-clock times that occur zero or two times on a DST day resolve by one rule (``local_instant``):
the earliest instant at which the local clock on that day has reached the time. In a gap that is
the moment the clocks jump (02:30 on a spring-forward day fires at 03:00, the first valid local
instant after the gap); in a fold it is the first occurrence, so a fall-back night fires once.

Whether a due timer still fires is ``lateness``: one policy for a worker that was down, a tick that
came late, and an event whose date had already passed when it arrived.

Errors: a naive ``datetime`` or an unknown zone name is a ``ValueError`` (callers at the config or
event boundary wrap it in their own error); a ``datetime`` where a calendar ``date`` is expected
is a ``TypeError``, because ``datetime.combine`` would silently drop its time and zone.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = dt.timedelta(seconds=1)  # tz database transitions fall on whole seconds
_ZERO = dt.timedelta(0)

Lateness = Literal["early", "on_time", "late"]


def local_instant(day: dt.date, at: dt.time, zone: str | ZoneInfo) -> dt.datetime:
    """The UTC instant at which the wall clock in ``zone`` reads ``at`` on ``day``.

    DST gap (the time does not exist, 02:30 on 2026-03-29 in Europe/Berlin): the instant the
    clocks jump, i.e. the first valid local instant after the gap (03:00 CEST = 01:00 UTC). A
    reminder set inside the gap fires as soon as its time has passed, not an hour late.
    DST fold (the time happens twice, 02:30 on 2026-10-25 in Berlin): the first occurrence
    (``fold=0``, 02:30 CEST = 00:30 UTC). ``at.fold`` is ignored: a schedule fires once.
    ``at`` must be naive: the zone comes from ``zone``, never from the time.
    """
    return _checked_local_instant(day, at, zone)


# The checks and the zone lookup cost as much as the cached conversion below; whole arguments are
# kept as well, by type (typed=True: a datetime is never taken for a date nor True for a day count,
# so a call that must fail never finds the entry of one that passed; failures are not kept).
@functools.lru_cache(maxsize=16384, typed=True)
def _checked_local_instant(day: dt.date, at: dt.time, zone: str | ZoneInfo) -> dt.datetime:
    tz = _zone(zone)
    _require_calendar_date(day, "day")
    if at.tzinfo is not None:
        raise ValueError(f"`at` must be a naive wall-clock time (the zone is {tz.key!r}), got {at!r}")
    return _local_instant(day, at.replace(fold=0), tz)


# Timers are planned again at every change of an entity and checked again when they fire, and
# whole cohorts share a day (every invoice due on the 1st): the pure result is worth keeping.
@functools.lru_cache(maxsize=16384)
def _local_instant(day: dt.date, at: dt.time, tz: ZoneInfo) -> dt.datetime:
    wall = dt.datetime.combine(day, at)
    # fold=0 reads the wall time with the offset in force before a transition: the first
    # occurrence in a fold, and a point just past the jump in a gap.
    first = wall.replace(tzinfo=tz).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # A gap: the local clock never shows `wall`. The jump lies between the two readings of it.
    return _offset_change(wall.replace(tzinfo=tz, fold=1).astimezone(UTC), first, tz)


def date_due(day: dt.date, at: dt.time, zone: str | ZoneInfo) -> dt.datetime:
    """When a date trigger fires: ``day`` (a date attribute, e.g. move-in) reached at local ``at``."""
    return local_instant(day, at, zone)


def relative_due(anchor_day: dt.date, offset_days: int, at: dt.time, zone: str | ZoneInfo) -> dt.datetime:
    """When "x days before/after a date" fires: ``offset_days`` calendar days from ``anchor_day``.

    Negative is before. Days are counted in the local calendar (month and year ends, leap days
    are ``date`` arithmetic), then pinned to local ``at``; across a DST change "2 days before"
    is therefore 47 or 49 real hours, and still 09:00 on the recipient's clock.
    """
    return _relative_due(anchor_day, offset_days, at, zone)


@functools.lru_cache(maxsize=16384, typed=True)  # as _checked_local_instant: a booking plans several of these
def _relative_due(anchor_day: dt.date, offset_days: int, at: dt.time, zone: str | ZoneInfo) -> dt.datetime:
    _require_calendar_date(anchor_day, "anchor_day")
    if isinstance(offset_days, bool) or not isinstance(offset_days, int):
        # date + timedelta(days=1.5) would quietly drop the half day
        raise TypeError(f"offset_days must be a whole number of days, got {offset_days!r}")
    return local_instant(anchor_day + dt.timedelta(days=offset_days), at, zone)


def before_instant(instant: dt.datetime, hours: float) -> dt.datetime:
    """When "N hours before an appointment" fires: ``hours`` of real elapsed time before ``instant``.

    Real time, not wall-clock: the mail promises "your appointment is in 24 hours", and that must
    hold when a DST change falls in between; real-time offsets also never land in a gap or fold.
    So for an appointment at 10:00 local whose previous 24 hours contain a change, the reminder
    shows a different local hour: Berlin 2026-03-29 10:00 CEST gets it at 09:00 CET on 03-28;
    2026-10-25 10:00 CET gets it at 11:00 CEST on 10-24. Use ``relative_due`` for "same time,
    N days earlier".
    """
    _require_aware(instant, "instant")
    if not hours >= 0:  # also rejects NaN
        raise ValueError(f"hours before must be zero or more, got {hours!r}")
    # In UTC first: aware arithmetic in a ZoneInfo zone is wall-clock arithmetic.
    return instant.astimezone(UTC) - dt.timedelta(hours=hours)


def absence_due(last_seen: dt.datetime, window: dt.timedelta) -> dt.datetime:
    """When an absence trigger fires: ``window`` of real time after the last sighting.

    Silence of exactly ``window`` counts as absent. A newer sighting replaces ``last_seen`` and so
    moves the timer (invariant 2): a flap shorter than the window never fires; the caller re-checks
    at fire time that ``last_seen`` is still the one this timer was derived from.
    """
    _require_aware(last_seen, "last_seen")
    if window <= dt.timedelta(0):
        raise ValueError(f"an absence window must be positive, got {window!r}")
    return last_seen.astimezone(UTC) + window


def next_weekly(after: dt.datetime, weekday: int, at: dt.time, zone: str | ZoneInfo) -> dt.datetime:
    """The next ``weekday`` (0 = Monday … 6 = Sunday) at local ``at`` strictly after ``after``.

    For "every Wednesday at 09:00 local". Strictly after: called with the occurrence that just
    fired, it returns the following week's, so a recurring timer re-arms without firing twice.
    Each occurrence is pinned through ``local_instant``, so 09:00 stays 09:00 local across DST.
    """
    _require_aware(after, "after")
    if isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 6:
        raise ValueError(f"weekday must be 0 (Monday) to 6 (Sunday), got {weekday!r}")
    tz = _zone(zone)
    after = after.astimezone(UTC)  # compare in UTC: same-zone comparison ignores fold
    today = after.astimezone(tz).date()
    day = today + dt.timedelta(days=(weekday - today.weekday()) % 7)
    due = local_instant(day, at, tz)
    if due <= after:  # only possible when `day` is today and the time has come
        due = local_instant(day + dt.timedelta(days=7), at, tz)
    return due


def lateness(due: dt.datetime, now: dt.datetime, grace: dt.timedelta) -> Lateness:
    """The missed-time policy: may a timer that is due at ``due`` fire at ``now``?

    - ``now < due``: ``"early"``, not yet;
    - ``due <= now <= due + grace``: ``"on_time"``, fire (late firing within the grace is fine);
    - ``now > due + grace``: ``"late"``, skip it and count it; a reminder days after its moment
      is worse than none.

    The same decision applies to an event that arrives with its date already past (a booking
    entered after its move-in day): its due instant is computed as usual and judged here, so it
    fires only if it is still within the grace.
    """
    # Timers and ticks are UTC already: the checks and conversions below are for other callers
    # (a tick decides ten thousand timers; this was a twentieth of it).
    if not (type(due) is dt.datetime and type(now) is dt.datetime and due.tzinfo is UTC and now.tzinfo is UTC):
        _require_aware(due, "due")
        _require_aware(now, "now")
        due, now = due.astimezone(UTC), now.astimezone(UTC)  # real time, whatever zones came in
    if grace < _ZERO:
        raise ValueError(f"grace must be zero or more, got {grace!r}")
    if now < due:
        return "early"
    if now <= due + grace:
        return "on_time"
    return "late"


def _zone(zone: str | ZoneInfo) -> ZoneInfo:
    if isinstance(zone, ZoneInfo):
        return zone
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        # ZoneInfoNotFoundError is a KeyError, whose message would be the quoted key alone
        raise ValueError(f"unknown time zone {zone!r}; expected an IANA name such as 'Europe/Berlin'") from None


def _require_aware(value: dt.datetime, name: str) -> None:
    if not isinstance(value, dt.datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (an instant), got naive {value.isoformat()}")


def _require_calendar_date(value: dt.date, name: str) -> None:
    if isinstance(value, dt.datetime):
        raise TypeError(f"{name} must be a calendar date in the local zone, not a datetime ({value.isoformat()})")
    if not isinstance(value, dt.date):
        raise TypeError(f"{name} must be a date, got {type(value).__name__}")


def _offset_change(before: dt.datetime, after: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The first whole second in ``(before, after]`` at which ``tz``'s UTC offset differs from before.

    ``zoneinfo`` does not expose its transitions, so bisect: a gap is at most a few hours (a day
    for a zone that skipped a date), which is under twenty probes.
    """
    lo = (before - _EPOCH) // _SECOND  # floor: still before the change
    hi = -((_EPOCH - after) // _SECOND)  # ceil: already after it
    offset_before = (_EPOCH + lo * _SECOND).astimezone(tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (_EPOCH + mid * _SECOND).astimezone(tz).utcoffset() == offset_before:
            lo = mid
        else:
            hi = mid
    return _EPOCH + hi * _SECOND
