"""``credex measures list`` and ``credex measures check``: the measures catalogue an operator edits.

The catalogue is data (TOML files; see :mod:`credex.domain.measures`), so an
operator needs to see what it holds and to validate an edited copy before a
node uses it: ``check`` prints every problem as ``file:line: message`` and exits
1, or a summary and exits 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from credex.domain.measures import INCENTIVE, Catalogue, check_folder
from credex.node.cli.app import console, err, measures_app

DirOption = Annotated[Path | None, typer.Option("--dir", help="a catalogue folder (default: the shipped one)")]


@measures_app.command("list")
def measures_list(
    scenario: Annotated[
        str | None, typer.Option(help="only measures that apply in this scenario (code or alias)")
    ] = None,
    folder: DirOption = None,
) -> None:
    """The catalogue's measures: id, name, category, basis, scenarios (and what triggers each)."""
    catalogue = Catalogue.load(folder)
    measures = catalogue.in_scenario(scenario)
    title = f"{len(measures)} measures" + (f" in scenario {catalogue.scenario(scenario).code}" if scenario else "")
    table = Table(title=title, title_justify="left")
    for column in ("id", "name", "category", "basis", "scenarios", "triggers"):
        table.add_column(column, overflow="fold", no_wrap=column == "id")
    for m in measures:
        category = m.category + (f" {m.measure_class}" if m.measure_class else "")
        if m.is_incentive:
            category += f" (look-back {m.lookback_years}y)"
        triggers = ", ".join(dict.fromkeys(t.describe() for t in m.triggers)) or "clean record"
        table.add_row(m.id, m.name, category, str(m.basis), ", ".join(m.scenarios), triggers)
    console.print(table)


@measures_app.command("check")
def measures_check(folder: Annotated[Path, typer.Argument(help="the catalogue folder to validate")]) -> None:
    """Validate a catalogue folder: each problem as ``file:line: message`` (exit 1), or a summary (exit 0)."""
    catalogue, problems = check_folder(folder)
    if catalogue is None:
        for problem in problems:
            err.print(str(problem), soft_wrap=True, markup=False, highlight=False)
        err.print(f"{len(problems)} problem(s) in {folder}", markup=False, highlight=False)
        raise typer.Exit(1)
    total = len(catalogue.measures)
    incentives = sum(1 for m in catalogue.measures if m.category == INCENTIVE)
    console.print(
        f"{folder}: {total} measures ({total - incentives} 惩戒, {incentives} 激励) "
        f"in {len(catalogue.files) - 3} measure files, {len(catalogue.scenarios)} scenarios, "
        f"{len(catalogue.list_types)} list types, {len(catalogue.trigger_sets)} trigger sets: no problems",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
