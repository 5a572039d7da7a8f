"""Working days on the official calendar, with its swapped weekend days (``chinese-calendar``).

The library knows the State Council's holiday arrangements for the years it
ships (2004 up to its release); for a year it does not know yet, Monday to
Friday is used and the answer says so, rather than failing a report.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import chinese_calendar


@lru_cache(maxsize=4096)
def is_workday(day: dt.date) -> tuple[bool, bool]:
    """(is a working day, by the official calendar rather than Monday to Friday)."""
    try:
        return bool(chinese_calendar.is_workday(day)), True
    except NotImplementedError:
        return day.weekday() < 5, False


def working_days_between(start: dt.date, end: dt.date) -> tuple[int, bool]:
    """Working days after ``start`` up to and including ``end`` (0 if end <= start), and whether all were official."""
    if end <= start:
        return 0, True
    days = 0
    official = True
    day = start + dt.timedelta(days=1)
    while day <= end:
        working, known = is_workday(day)
        days += working
        official = official and known
        day += dt.timedelta(days=1)
    return days, official
