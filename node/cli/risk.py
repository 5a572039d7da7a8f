"""``credex risk-schemes``: the market-supervision risk schemes, their classes and default 双随机 rates.

The schemes are data (:mod:`credex.domain.risk`): a supervision platform reads the default
sampling rate of each class here (and beside every class its stream sends) before it sets its
own, and an operator validates an edited list before proposing it for the shipped one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from credex.domain.risk import RiskSchemes
from credex.node.cli.app import app, console


@app.command("risk-schemes")
def risk_schemes(
    file: Annotated[
        Path | None, typer.Option("--file", help="a list of schemes to check (default: the shipped one)")
    ] = None,
) -> None:
    """Every risk scheme's classes with their meaning and default sampling rate; a bad file is an error."""
    schemes = RiskSchemes.load(file)
    title = f"{len(schemes.schemes)} risk schemes (never published: supervision only)"
    table = Table(title=title, title_justify="left")
    for column in ("scheme", "class", "meaning", "双随机 sampling", "basis"):
        table.add_column(column, overflow="fold")
    for scheme in schemes.schemes.values():
        for risk_class in scheme.classes:
            rate = risk_class.sampling
            table.add_row(
                scheme.id,
                risk_class.symbol,
                risk_class.meaning,
                f"{rate.low_percent}–{rate.high_percent} %",
                scheme.basis,
            )
    console.print(table)
