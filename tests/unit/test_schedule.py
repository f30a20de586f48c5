"""Schedule arithmetic of timed triggers (streams/domain/schedule.py).

Every expected instant is written out in UTC by hand from the zone's offsets (noted beside it),
never computed with the code under test. 2026 switches: EU 03-29 and 10-25 at 01:00 UTC; US
03-08 and 11-01 at 02:00 local; Sydney ends 04-05 03:00 AEDT, starts 10-04 02:00 AEST; Chatham
(+12:45 / +13:45) ends 04-05 03:45, starts 09-27 02:45.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest

from streams.domain.schedule import (
    Lateness,
    absence_due,
    before_instant,
    date_due,
    lateness,
    local_instant,
    next_weekly,
    relative_due,
)

UTC = dt.timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
NINE = dt.time(9, 0)
MONDAY, WEDNESDAY, SUNDAY = 0, 2, 6


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def assert_utc(actual: dt.datetime, expected: dt.datetime) -> None:
    assert actual == expected
    assert actual.utcoffset() == dt.timedelta(0)


# --- a local time of day, in every kind of zone ---------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "expected"),
    [
        ("Europe/Berlin", dt.date(2026, 1, 15), utc(2026, 1, 15, 8, 0)),  # CET +1
        ("Europe/Berlin", dt.date(2026, 7, 15), utc(2026, 7, 15, 7, 0)),  # CEST +2
        ("Europe/London", dt.date(2026, 1, 15), utc(2026, 1, 15, 9, 0)),  # GMT
        ("Europe/London", dt.date(2026, 7, 15), utc(2026, 7, 15, 8, 0)),  # BST +1
        ("America/New_York", dt.date(2026, 1, 15), utc(2026, 1, 15, 14, 0)),  # EST -5
        ("America/New_York", dt.date(2026, 7, 15), utc(2026, 7, 15, 13, 0)),  # EDT -4
        ("Australia/Sydney", dt.date(2026, 1, 15), utc(2026, 1, 14, 22, 0)),  # AEDT +11: summer in January
        ("Australia/Sydney", dt.date(2026, 7, 15), utc(2026, 7, 14, 23, 0)),  # AEST +10
        ("Asia/Kolkata", dt.date(2026, 1, 15), utc(2026, 1, 15, 3, 30)),  # +05:30 all year
        ("Asia/Kolkata", dt.date(2026, 7, 15), utc(2026, 7, 15, 3, 30)),
        ("Pacific/Chatham", dt.date(2026, 1, 15), utc(2026, 1, 14, 19, 15)),  # +13:45
        ("Pacific/Chatham", dt.date(2026, 7, 15), utc(2026, 7, 14, 20, 15)),  # +12:45
        ("UTC", dt.date(2026, 7, 15), utc(2026, 7, 15, 9, 0)),
    ],
)
def test_date_due_is_nine_local_in_utc(zone: str, day: dt.date, expected: dt.datetime) -> None:
    assert_utc(date_due(day, NINE, zone), expected)


def test_a_zoneinfo_object_is_as_good_as_its_name() -> None:
    assert_utc(local_instant(dt.date(2026, 7, 15), NINE, BERLIN), utc(2026, 7, 15, 7, 0))


# --- DST gaps: the first valid local instant after the gap ----------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected"),
    [
        ("Europe/Berlin", dt.date(2026, 3, 29), dt.time(1, 59), utc(2026, 3, 29, 0, 59)),  # last CET minute
        ("Europe/Berlin", dt.date(2026, 3, 29), dt.time(2, 0), utc(2026, 3, 29, 1, 0)),  # gap start -> 03:00 CEST
        ("Europe/Berlin", dt.date(2026, 3, 29), dt.time(2, 30), utc(2026, 3, 29, 1, 0)),  # inside -> 03:00 CEST
        ("Europe/Berlin", dt.date(2026, 3, 29), dt.time(2, 59, 59, 999999), utc(2026, 3, 29, 1, 0)),
        ("Europe/Berlin", dt.date(2026, 3, 29), dt.time(3, 0), utc(2026, 3, 29, 1, 0)),  # first CEST instant
        ("Europe/Berlin", dt.date(2026, 3, 29), dt.time(3, 30), utc(2026, 3, 29, 1, 30)),
        ("Europe/London", dt.date(2026, 3, 29), dt.time(1, 30), utc(2026, 3, 29, 1, 0)),  # -> 02:00 BST
        ("America/New_York", dt.date(2026, 3, 8), dt.time(2, 30), utc(2026, 3, 8, 7, 0)),  # -> 03:00 EDT
        ("Australia/Sydney", dt.date(2026, 10, 4), dt.time(2, 30), utc(2026, 10, 3, 16, 0)),  # -> 03:00 AEDT
        ("Pacific/Chatham", dt.date(2026, 9, 27), dt.time(3, 0), utc(2026, 9, 26, 14, 0)),  # -> 03:45 +13:45
        # Samoa skipped 2011-12-30 entirely: the first valid instant is 2011-12-31 00:00 +14.
        ("Pacific/Apia", dt.date(2011, 12, 30), NINE, utc(2011, 12, 30, 10, 0)),
    ],
)
def test_a_time_in_a_gap_fires_when_the_clocks_jump(zone: str, day: dt.date, at: dt.time, expected: dt.datetime) -> None:
    assert_utc(local_instant(day, at, zone), expected)


# --- DST folds: the first occurrence ---------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected"),
    [
        ("Europe/Berlin", dt.date(2026, 10, 25), dt.time(2, 30), utc(2026, 10, 25, 0, 30)),  # CEST, not 01:30Z
        ("Europe/Berlin", dt.date(2026, 10, 25), dt.time(3, 0), utc(2026, 10, 25, 2, 0)),  # after the fold: CET
        ("Europe/London", dt.date(2026, 10, 25), dt.time(1, 30), utc(2026, 10, 25, 0, 30)),  # BST, not 01:30Z
        ("America/New_York", dt.date(2026, 11, 1), dt.time(1, 30), utc(2026, 11, 1, 5, 30)),  # EDT, not 06:30Z
        ("Australia/Sydney", dt.date(2026, 4, 5), dt.time(2, 30), utc(2026, 4, 4, 15, 30)),  # AEDT, not 16:30Z
    ],
)
def test_a_time_in_a_fold_fires_at_its_first_occurrence(zone: str, day: dt.date, at: dt.time, expected: dt.datetime) -> None:
    assert_utc(local_instant(day, at, zone), expected)


def test_the_fold_flag_of_the_time_is_ignored() -> None:
    assert_utc(local_instant(dt.date(2026, 10, 25), dt.time(2, 30, fold=1), BERLIN), utc(2026, 10, 25, 0, 30))


# --- relative: calendar days in the local calendar ------------------------------------------


@pytest.mark.parametrize(
    ("zone", "anchor", "offset", "expected"),
    [
        ("Europe/Berlin", dt.date(2026, 1, 31), 1, utc(2026, 2, 1, 8, 0)),  # month end
        ("Europe/Berlin", dt.date(2026, 3, 2), -3, utc(2026, 2, 27, 8, 0)),  # back over a 28-day February
        ("Europe/Berlin", dt.date(2028, 2, 28), 1, utc(2028, 2, 29, 8, 0)),  # onto the leap day
        ("Europe/Berlin", dt.date(2028, 2, 29), 1, utc(2028, 3, 1, 8, 0)),
        ("Europe/Berlin", dt.date(2028, 2, 29), -1, utc(2028, 2, 28, 8, 0)),
        ("Europe/Berlin", dt.date(2028, 2, 29), 365, utc(2029, 2, 28, 8, 0)),
        ("America/New_York", dt.date(2027, 1, 3), -5, utc(2026, 12, 29, 14, 0)),  # back over the year end
        ("Australia/Sydney", dt.date(2026, 12, 31), 1, utc(2026, 12, 31, 22, 0)),  # 2027-01-01 09:00 AEDT
        ("Europe/Berlin", dt.date(2026, 3, 30), -2, utc(2026, 3, 28, 8, 0)),  # across DST: 49 h, still 09:00 CET
        ("Europe/Berlin", dt.date(2026, 3, 27), 2, utc(2026, 3, 29, 7, 0)),  # the DST day itself: 09:00 CEST
        ("Europe/Berlin", dt.date(2026, 7, 15), 0, utc(2026, 7, 15, 7, 0)),  # zero is the date itself
    ],
)
def test_relative_due_counts_local_calendar_days(zone: str, anchor: dt.date, offset: int, expected: dt.datetime) -> None:
    assert_utc(relative_due(anchor, offset, NINE, zone), expected)


def test_relative_due_into_a_gap_uses_the_gap_rule() -> None:
    assert_utc(relative_due(dt.date(2026, 3, 28), 1, dt.time(2, 30), BERLIN), utc(2026, 3, 29, 1, 0))


# --- before an appointment: real elapsed time ------------------------------------------------


@pytest.mark.parametrize(
    ("instant", "hours", "expected"),
    [
        # 10:00 CEST on the spring-forward day: 24 h earlier is 09:00 CET the day before.
        (utc(2026, 3, 29, 8, 0), 24, utc(2026, 3, 28, 8, 0)),
        (dt.datetime(2026, 3, 29, 10, 0, tzinfo=BERLIN), 24, utc(2026, 3, 28, 8, 0)),  # not 10:00 CET = 09:00Z
        # 10:00 CET on the fall-back day: 24 h earlier is 11:00 CEST the day before.
        (dt.datetime(2026, 10, 25, 10, 0, tzinfo=BERLIN), 24, utc(2026, 10, 24, 9, 0)),
        (dt.datetime(2026, 7, 15, 10, 0, tzinfo=ZoneInfo("Asia/Kolkata")), 2, utc(2026, 7, 15, 2, 30)),
        (utc(2026, 7, 15, 10, 0), 1.5, utc(2026, 7, 15, 8, 30)),
        (utc(2026, 7, 15, 10, 0), 0, utc(2026, 7, 15, 10, 0)),
    ],
)
def test_before_instant_is_real_time(instant: dt.datetime, hours: float, expected: dt.datetime) -> None:
    assert_utc(before_instant(instant, hours), expected)


@pytest.mark.parametrize("hours", [-1, float("nan")])
def test_before_instant_rejects_negative_hours(hours: float) -> None:
    with pytest.raises(ValueError, match="hours"):
        before_instant(utc(2026, 7, 15, 10, 0), hours)


# --- absence ----------------------------------------------------------------------------------


def test_absence_is_due_a_window_after_the_last_sighting() -> None:
    assert_utc(absence_due(utc(2026, 7, 15, 23, 50), dt.timedelta(minutes=15)), utc(2026, 7, 16, 0, 5))
    # The fall-back hour is a real hour of silence: 02:50 CEST + 30 min is 02:20 CET.
    assert_utc(absence_due(dt.datetime(2026, 10, 25, 2, 50, tzinfo=BERLIN), dt.timedelta(minutes=30)), utc(2026, 10, 25, 1, 20))


@pytest.mark.parametrize("window", [dt.timedelta(0), dt.timedelta(minutes=-5)])
def test_absence_window_must_be_positive(window: dt.timedelta) -> None:
    with pytest.raises(ValueError, match="window"):
        absence_due(utc(2026, 7, 15, 10, 0), window)


# --- recurring: every Wednesday at 09:00 local ------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "weekday", "at", "after", "expected"),
    [
        ("Europe/Berlin", WEDNESDAY, NINE, utc(2026, 3, 23, 12, 0), utc(2026, 3, 25, 8, 0)),  # Monday -> Wed CET
        ("Europe/Berlin", WEDNESDAY, NINE, utc(2026, 3, 25, 7, 59, 59, 999999), utc(2026, 3, 25, 8, 0)),
        # exactly at an occurrence: next week, over the switch, still 09:00 local (now CEST)
        ("Europe/Berlin", WEDNESDAY, NINE, utc(2026, 3, 25, 8, 0), utc(2026, 4, 1, 7, 0)),
        ("Europe/Berlin", WEDNESDAY, NINE, utc(2026, 10, 21, 7, 0), utc(2026, 10, 28, 8, 0)),  # CEST -> CET
        ("America/New_York", WEDNESDAY, NINE, utc(2026, 3, 4, 14, 0), utc(2026, 3, 11, 13, 0)),  # EST -> EDT
        ("Australia/Sydney", WEDNESDAY, NINE, utc(2026, 3, 31, 22, 0), utc(2026, 4, 7, 23, 0)),  # AEDT -> AEST
        # Tuesday 20:00 UTC is already Wednesday 01:30 in Kolkata: this Wednesday, not next.
        ("Asia/Kolkata", WEDNESDAY, NINE, utc(2026, 7, 14, 20, 0), utc(2026, 7, 15, 3, 30)),
        # Thursday 02:00 UTC is still Wednesday 22:00 EDT: tonight's 23:00, not next week's.
        ("America/New_York", WEDNESDAY, dt.time(23, 0), utc(2026, 7, 16, 2, 0), utc(2026, 7, 16, 3, 0)),
        ("UTC", MONDAY, NINE, utc(2026, 12, 30, 12, 0), utc(2027, 1, 4, 9, 0)),  # over the year end
        # A weekly time inside the fold fires once: after the first 02:30, next Sunday, not 01:30Z.
        ("Europe/Berlin", SUNDAY, dt.time(2, 30), utc(2026, 10, 25, 0, 30), utc(2026, 11, 1, 1, 30)),
    ],
)
def test_next_weekly(zone: str, weekday: int, at: dt.time, after: dt.datetime, expected: dt.datetime) -> None:
    assert_utc(next_weekly(after, weekday, at, zone), expected)


@pytest.mark.parametrize("weekday", [-1, 7])
def test_next_weekly_rejects_a_weekday_out_of_range(weekday: int) -> None:
    with pytest.raises(ValueError, match="weekday"):
        next_weekly(utc(2026, 7, 15, 10, 0), weekday, NINE, BERLIN)


# --- lateness: the missed-time policy ---------------------------------------------------------

DUE = utc(2026, 7, 15, 9, 0)
HOUR = dt.timedelta(hours=1)
MICROSECOND = dt.timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("now", "grace", "expected"),
    [
        (DUE - MICROSECOND, HOUR, "early"),
        (DUE, HOUR, "on_time"),
        (DUE + HOUR, HOUR, "on_time"),
        (DUE + HOUR + MICROSECOND, HOUR, "late"),
        (DUE, dt.timedelta(0), "on_time"),
        (DUE + MICROSECOND, dt.timedelta(0), "late"),
        (dt.datetime(2026, 7, 15, 11, 0, tzinfo=BERLIN), dt.timedelta(0), "on_time"),  # same instant, other zone
        # An event arriving with its date already past goes through the same decision.
        (utc(2026, 7, 17, 9, 0), dt.timedelta(days=1), "late"),
    ],
)
def test_lateness(now: dt.datetime, grace: dt.timedelta, expected: Lateness) -> None:
    assert lateness(DUE, now, grace) == expected


def test_lateness_compares_real_time_inside_a_fold() -> None:
    # 02:30 CEST (00:30Z) is due; the second 02:10, in CET (01:10Z), is 40 minutes later.
    due = dt.datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)
    now = dt.datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=BERLIN)
    assert lateness(due, now, dt.timedelta(minutes=30)) == "late"


# --- input validation -------------------------------------------------------------------------

NAIVE = dt.datetime(2026, 7, 15, 9, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: before_instant(NAIVE, 24),
        lambda: absence_due(NAIVE, HOUR),
        lambda: next_weekly(NAIVE, WEDNESDAY, NINE, BERLIN),
        lambda: lateness(NAIVE, DUE, HOUR),
        lambda: lateness(DUE, NAIVE, HOUR),
    ],
    ids=["before_instant", "absence_due", "next_weekly", "lateness-due", "lateness-now"],
)
def test_naive_datetimes_are_rejected(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call()


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe", "", "../etc/passwd", "zone.tab"])
def test_an_unknown_zone_is_a_value_error_naming_it(zone: str) -> None:
    with pytest.raises(ValueError) as raised:
        date_due(dt.date(2026, 7, 15), NINE, zone)
    assert repr(zone) in str(raised.value)


def test_a_datetime_is_not_a_calendar_day() -> None:
    # combine() would silently keep only the date part of 2026-03-01 23:30Z (already 03-02 in Berlin)
    with pytest.raises(TypeError, match="calendar date"):
        date_due(utc(2026, 3, 1, 23, 30), NINE, BERLIN)


def test_the_time_of_day_must_be_naive() -> None:
    with pytest.raises(ValueError, match="naive wall-clock"):
        local_instant(dt.date(2026, 7, 15), dt.time(9, 0, tzinfo=UTC), BERLIN)


def test_offset_days_must_be_whole_days() -> None:
    with pytest.raises(TypeError, match="whole number"):
        relative_due(dt.date(2026, 7, 15), 1.5, NINE, BERLIN)  # type: ignore[arg-type]
