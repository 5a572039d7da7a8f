"""Publicity windows (公示期限) for penalties, by severity.

The national rules in force from 2026-04-01: 轻微 normally not published and at
most 3 months if it is; 一般 at least 3 months and at most 1 year; 严重 at least
1 year and at most 3 years, counted from the decision date. A window given by
the source (CF_GSJZQ) wins inside those bounds. The figures are defaults an
operator may change (``[publicity]`` in the node config).
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from credex.v1 import record_pb2

# Windows end on a calendar day in China, where the platforms publish, whatever the server's zone.
CHINA = ZoneInfo("Asia/Shanghai")


def publicity_today(now: dt.datetime | None = None) -> dt.date:
    """Today in China Standard Time (``now``, if given, instead of the clock): the one day credit rules go by.

    Windows, checks, reports, authorizations and case deadlines are all judged on it, on a
    node whose clock runs in UTC too: from 16:00 UTC the machine's own date is yesterday
    there, and a check judged on it would show a record whose window ended as in force.
    """
    return (now or dt.datetime.now(dt.UTC)).astimezone(CHINA).date()


class WindowRule(BaseModel, frozen=True):
    min_months: int
    max_months: int
    published_by_default: bool = True


class PublicityRules(BaseModel, frozen=True):
    minor: WindowRule = WindowRule(min_months=0, max_months=3, published_by_default=False)
    general: WindowRule = WindowRule(min_months=3, max_months=12)
    serious: WindowRule = WindowRule(min_months=12, max_months=36)

    def rule_for(self, severity: int) -> WindowRule:
        if severity == record_pb2.SEVERITY_MINOR:
            return self.minor
        if severity == record_pb2.SEVERITY_SERIOUS:
            return self.serious
        return self.general


@dataclass(frozen=True, slots=True)
class Window:
    start: dt.date
    end: dt.date
    earliest_repair: dt.date
    clamped: bool  # the source gave an end outside the bounds


def add_months(day: dt.date, months: int) -> dt.date:
    """Calendar months, clamped to the month's last day (2024-01-31 + 1 month = 2024-02-29)."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


@lru_cache(maxsize=16384)
def penalty_window(rules: PublicityRules, decision: dt.date, severity: int, given_end: dt.date | None) -> Window:
    """The window for a penalty; a minor one not published by default ends on its decision day."""
    rule = rules.rule_for(severity)
    earliest = add_months(decision, rule.min_months)
    latest = add_months(decision, rule.max_months)
    if given_end is None:
        end = latest if rule.published_by_default else decision
        return Window(decision, end, earliest, clamped=False)
    end = min(max(given_end, earliest), latest)
    return Window(decision, end, earliest, clamped=end != given_end)
