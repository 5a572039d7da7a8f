"""``credex quality report``: data quality per source unit, with the problem rows to send back to each unit."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from rich.table import Table

from credex.node.cli.app import NodeConfigOption, console, fail, load_settings, quality_app, run_on_store
from credex.node.quality import RATES, compute, problem_rows, write_problem_csv
from credex.node.quality.report import UnitQuality

_COLUMNS = (
    "source unit",
    "reported",
    "accepted",
    "quarantined",
    "合规率",
    "及时率",
    "上报率",
    "全面性",
    "准确性",
    "有效性",
    "错码率",
    "重码率",
)


@quality_app.command("report")
def quality_report(
    config: NodeConfigOption,
    unit: Annotated[str | None, typer.Option(help="one source unit's USCC")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for one CSV of problem rows per source unit")] = None,
    expected: Annotated[Path | None, typer.Option(help="CSV of unit_uscc,expected for the 上报率")] = None,
) -> None:
    """Quality per source unit: 全面性, 及时性, 准确性, 有效性, 上报率/合规率/及时率, 错码 and 重码 rates."""
    settings = load_settings(config)
    wanted: dict[str, int] = {}
    if expected is not None:
        try:
            with expected.open(encoding="utf-8-sig", newline="") as handle:
                wanted = {row["unit_uscc"]: int(row["expected"]) for row in csv.DictReader(handle)}
        except (OSError, KeyError, ValueError) as exc:
            raise fail(f"{expected}: expected a CSV with columns unit_uscc,expected ({exc})") from None
    deadline = settings.quality.deadline_working_days

    async def work(pool: asyncpg.Pool) -> tuple[list[UnitQuality], dict[str, list[dict[str, str]]]]:
        units = await compute(pool, settings.origin, deadline_days=deadline, unit=unit, expected=wanted)
        problems = {u.unit_uscc: await problem_rows(pool, u.unit_uscc) for u in units} if out else {}
        return units, problems

    units, problems = run_on_store(config, work)
    table = Table(
        title=f"data quality of {settings.origin}'s source units (及时: {deadline} working days)", title_justify="left"
    )
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column == "source unit" else "right")
    for u in units:
        table.add_row(
            f"{u.unit_name} {u.unit_uscc}",
            str(u.reported),
            str(u.accepted),
            str(u.quarantined),
            *(_percent(getattr(u, name)) for name in RATES),
        )
    console.print(table)
    if not all(u.calendar_official for u in units):
        console.print("some working days fall in years the official calendar does not cover yet: Monday to Friday used")
    if out is not None:
        for code, rows in problems.items():
            if rows:
                path = out / f"{code or 'unknown-unit'}.csv"
                write_problem_csv(path, rows)
                console.print(f"wrote {path}: {len(rows)} problem rows")


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"
