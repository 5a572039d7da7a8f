"""Working days on the official calendar, with its swapped weekend days (``chinese-calendar``).

The library knows the State Council's holiday arrangements for the years it
ships (2004 up to its release); for a year it does not know yet, Monday to
Friday is used and the answer says so, rather than failing a report.

Reports count working days for every record they judge, so a year's calendar
is turned once into running totals and any span is answered in O(1): two
look-ups per year it touches instead of one library call per day.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from itertools import accumulate

import chinese_calendar


def is_workday(day: dt.date) -> tuple[bool, bool]:
    """(is a working day, by the official calendar rather than Monday to Friday)."""
    try:
        return bool(chinese_calendar.is_workday(day)), True
    except NotImplementedError:
        return day.weekday() < 5, False


@lru_cache(maxsize=256)  # keyed by year: bounded by the calendar, not by callers
def _year(year: int) -> tuple[tuple[int, ...], bool]:
    """Working days from 1 January up to and including each day of ``year``, and whether all were official."""
    first = dt.date(year, 1, 1)
    days = [first + dt.timedelta(days=i) for i in range((dt.date(year + 1, 1, 1) - first).days)]
    flags = [is_workday(day) for day in days]
    return tuple(accumulate(int(working) for working, _ in flags)), all(known for _, known in flags)


def _through(day: dt.date) -> int:
    """Working days from 1 January of ``day``'s year up to and including ``day``."""
    return _year(day.year)[0][day.timetuple().tm_yday - 1]


def working_days_between(start: dt.date, end: dt.date) -> tuple[int, bool]:
    """Working days after ``start`` up to and including ``end`` (0 if end <= start), and whether all were official."""
    if end <= start:
        return 0, True
    days = 0
    official = True
    for year in range(start.year, end.year + 1):
        totals, known = _year(year)
        upto = _through(end) if year == end.year else totals[-1]
        before = _through(start) if year == start.year else 0
        days += upto - before
        official = official and known
    return days, official


def add_working_days(start: dt.date, days: int) -> dt.date:
    """The day ``days`` working days after ``start`` on the official calendar (``start`` itself if 0).

    A deadline "within N working days of receipt" falls on this day: the day of
    receipt does not count, an adjusted working weekend does, a holiday does not.
    """
    day = start
    left = days
    while left > 0:
        day += dt.timedelta(days=1)
        if is_workday(day)[0]:
            left -= 1
    return day
