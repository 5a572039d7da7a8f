"""``credex alarm list`` and ``credex alarm clear``: equivocation alarms of a node, read from its database."""

from __future__ import annotations

import json
from typing import Annotated

import asyncpg
import typer

from credex.node.chain import clear_alarm, list_alarms
from credex.node.chain.alarms import Alarm
from credex.node.cli.app import NodeConfigOption, alarm_app, console, fail, run_on_store


@alarm_app.command("list")
def alarm_list(config: NodeConfigOption) -> None:
    """Open alarms of a node, with their evidence."""

    async def work(pool: asyncpg.Pool) -> list[Alarm]:
        async with pool.acquire() as conn:
            return await list_alarms(conn)

    alarms = run_on_store(config, work)
    if not alarms:
        console.print("no open alarms")
    for alarm in alarms:
        console.print(
            f"#{alarm.id} {alarm.kind} on {alarm.origin} at {alarm.raised_at}: {alarm.message}", soft_wrap=True
        )
        console.print(json.dumps(alarm.evidence, ensure_ascii=False, indent=2), soft_wrap=True)


@alarm_app.command("clear")
def alarm_clear(
    alarm_id: Annotated[int, typer.Argument()],
    config: NodeConfigOption,
    by: Annotated[str, typer.Option(help="who clears it (kept with the alarm)")],
    note: Annotated[str, typer.Option(help="why it is safe to go on")] = "",
) -> None:
    """Clear an alarm after investigation; the node applies the origin's log again."""

    async def work(pool: asyncpg.Pool) -> bool:
        async with pool.acquire() as conn:
            return await clear_alarm(conn, alarm_id, by, note)

    if not run_on_store(config, work):
        raise fail(f"no open alarm #{alarm_id}")
    console.print(f"alarm #{alarm_id} cleared by {by}")
