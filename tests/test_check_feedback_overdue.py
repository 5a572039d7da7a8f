"""Usage feedback overdue on the official calendar (credit-use.md, Check: 应用情况反馈).

A Shanghai procurement office checks three companies: one check was made 10 working days
before "today" across the 2026 National Day holiday (15 days Monday to Friday), one got its
feedback, one was made today. Only the first is overdue, counted on the official calendar:
with 12 working days allowed it is not overdue yet, though Monday to Friday would say so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from credex.domain.workdays import working_days_between
from credex.node.checks import overdue_feedback, refresh_overdue_metric
from credex.node.cli import app
from credex.node.runtime import Node

from .callers import GOVERNMENT, government_channel
from .conftest import TestFederation, eventually
from .test_checks import CLEAN, LAPSED, LISTED, check, check_request, feedback, punished

TODAY = dt.date(2026, 10, 14)  # a Wednesday, a week after the National Day holiday (1–7 October)
BEFORE_THE_HOLIDAY = "2026-09-23 10:00:00+08"  # a Wednesday, 10 working days earlier by the official calendar


@pytest.fixture
async def shanghai(federation: TestFederation) -> AsyncIterator[Node]:
    node = await federation.start_node("310000", access={"callers": {GOVERNMENT: "government"}})
    yield node


async def made_checks(federation: TestFederation, node: Node) -> dict[str, str]:
    """One check per subject: LISTED's dated before the holiday, LAPSED's with feedback, CLEAN's today."""
    async with government_channel(federation, node) as channel:
        ids = {code: (await check(channel, check_request(code))).check_id for code in (LISTED, LAPSED, CLEAN)}
        await feedback(channel, punished(ids[LAPSED], LAPSED))
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        await conn.execute(
            "UPDATE checks SET at = $2::text::timestamptz WHERE check_id = ANY($1::uuid[])",
            [ids[LISTED], ids[LAPSED]],
            BEFORE_THE_HOLIDAY,
        )
        await conn.execute(
            "UPDATE checks SET at = $2::text::timestamptz WHERE check_id = $1::uuid", ids[CLEAN], "2026-10-14 09:00+08"
        )
    return ids


def test_the_holiday_span_is_ten_official_working_days_but_fifteen_monday_to_friday() -> None:
    start = dt.date(2026, 9, 23)
    weekdays = sum((start + dt.timedelta(days=n)).weekday() < 5 for n in range(1, (TODAY - start).days + 1))
    assert (working_days_between(start, TODAY), weekdays) == ((10, True), 15)


async def test_only_the_check_without_feedback_past_the_working_days_allowed_is_overdue(
    federation: TestFederation, shanghai: Node
) -> None:
    ids = await made_checks(federation, shanghai)
    assert shanghai.pool is not None
    overdue = await overdue_feedback(shanghai.pool, due_working_days=5, today=TODAY)
    assert [(o.check_id, o.subject_id, o.working_days_since, o.calendar_official) for o in overdue] == [
        (ids[LISTED], LISTED, 10, True)
    ]
    (late,) = overdue
    assert late.requesting_unit == check_request().requesting_unit_uscc and late.scenario == "政府采购"
    assert late.checked_at.astimezone(dt.UTC) == dt.datetime(2026, 9, 23, 2, 0, tzinfo=dt.UTC)


async def test_the_official_calendar_decides_not_monday_to_friday(federation: TestFederation, shanghai: Node) -> None:
    await made_checks(federation, shanghai)
    assert shanghai.pool is not None
    assert await overdue_feedback(shanghai.pool, due_working_days=12, today=TODAY) == []


async def test_listing_sets_the_overdue_gauge(federation: TestFederation, shanghai: Node) -> None:
    await made_checks(federation, shanghai)
    assert shanghai.pool is not None
    await refresh_overdue_metric(shanghai.pool, "310000", 5, today=TODAY)
    assert REGISTRY.get_sample_value("credex_check_feedback_overdue", {"origin": "310000"}) == 1
    await refresh_overdue_metric(shanghai.pool, "310000", 12, today=TODAY)
    assert REGISTRY.get_sample_value("credex_check_feedback_overdue", {"origin": "310000"}) == 0


async def test_credex_checks_overdue_lists_them_from_the_node_config(
    federation: TestFederation, shanghai: Node
) -> None:
    ids = await made_checks(federation, shanghai)
    assert shanghai.pool is not None
    async with shanghai.pool.acquire() as conn:  # CLEAN's check made just now, by the real clock
        await conn.execute("UPDATE checks SET at = now() WHERE check_id = $1::uuid", ids[CLEAN])
    env = {"CREDEX_DATABASE__URL": federation.database_url("310000"), "CREDEX_CHECKS__FEEDBACK_DUE_WORKING_DAYS": "5"}
    config = str(federation.layout.config_path("310000"))
    # The command runs its own event loop, as from a shell; today is the real date.
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["checks", "overdue", "--config", config, "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    listed = json.loads(result.output)
    assert [(row["check_id"], row["subject_id"]) for row in listed][:1] == [(ids[LISTED], LISTED)]
    assert {ids[LAPSED], ids[CLEAN]}.isdisjoint(row["check_id"] for row in listed)


async def test_a_serving_node_keeps_the_overdue_gauge_current_by_itself(federation: TestFederation) -> None:
    node = await federation.start_node(
        "320000", access={"callers": {GOVERNMENT: "government"}}, checks={"overdue_every_seconds": 0.2}
    )
    async with government_channel(federation, node) as channel:
        made = await check(channel, check_request(LISTED, CLEAN))
    assert node.pool is not None
    async with node.pool.acquire() as conn:  # made two months ago by the real clock, and never answered
        await conn.execute("UPDATE checks SET at = now() - interval '60 days' WHERE check_id = $1::uuid", made.check_id)

    def gauge_is(expected: float) -> Callable[[], Awaitable[bool]]:
        async def now() -> bool:
            return REGISTRY.get_sample_value("credex_check_feedback_overdue", {"origin": "320000"}) == expected

        return now

    await eventually(gauge_is(2.0))  # nobody ran `credex checks overdue`
    async with government_channel(federation, node) as channel:
        await feedback(channel, punished(made.check_id, LISTED))
    await eventually(gauge_is(1.0))
