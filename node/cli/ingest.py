"""``credex ingest`` and ``credex synth``: a node's own platform files in, and sample files to try it with."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from credex.adapters.profile import Profile
from credex.crypto.keys import SigningRefused
from credex.node.cli.app import app, console, err, fail, load_settings, setup_logging
from credex.node.feeds import IngestError


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="platform export files (CSV, XLSX)")],
    config: Annotated[Path, typer.Option("--config", "-c", help="the node's node.toml; its database is used")],
    profile: Annotated[str, typer.Option(help="profile name or .toml file")] = "national",
) -> None:
    """Take files in through a node's ledger: prints rows in / accepted / quarantined per file."""
    from credex.node.runtime import Node

    settings = load_settings(config)
    setup_logging("WARNING")
    chosen = Profile.load(profile)
    failures = 0

    async def main() -> None:
        nonlocal failures
        node = Node(settings)
        await node.start(serve=False, exchange=False)
        try:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            ) as progress:
                for path in files:
                    task = progress.add_task(path.name, total=None)

                    def update(source: str, done: int, total: int, task: TaskID = task) -> None:
                        progress.update(task, completed=done, total=total or None, description=source)

                    try:
                        [report] = await node.ingest([path], chosen, progress=update)
                    except (IngestError, SigningRefused) as exc:
                        # One broken file does not stop the others; the exit code says some failed.
                        failures += 1
                        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
                        continue
                    finally:
                        progress.remove_task(task)
                    balance = (
                        f"{report.rows_in} rows in / {report.accepted} accepted / {report.quarantined} quarantined"
                    )
                    if report.already_taken:
                        console.print(f"{path}: already taken in ({balance}); nothing changed", soft_wrap=True)
                        continue
                    console.print(
                        f"{path}: {balance} — {report.new} new, {report.corrected} corrected, "
                        f"{report.unchanged} unchanged, {report.revoked} revoked",
                        soft_wrap=True,
                    )
                    if report.withdrawn_unknown:
                        console.print(
                            f"    {report.withdrawn_unknown} rows marked withdrawn are of records never taken in:"
                            " nothing to revoke",
                            soft_wrap=True,
                        )
                    for reason, n in report.reasons.most_common():
                        console.print(f"    quarantined {n:>6} × {reason}")
        finally:
            await node.stop()

    asyncio.run(main())
    if failures:
        raise typer.Exit(1)


@app.command("synth")
def synth_command(
    out: Annotated[Path, typer.Argument(help=".csv or .xlsx file to write")],
    region: Annotated[str, typer.Option(help="origin code, e.g. 310000")] = "310000",
    kind: Annotated[str, typer.Option(help="penalty or licence")] = "penalty",
    rows: Annotated[int, typer.Option()] = 1000,
    seed: Annotated[int, typer.Option()] = 1,
    bad_share: Annotated[float, typer.Option(help="share of rows with one deliberate defect")] = 0.02,
    shared_share: Annotated[float, typer.Option(help="share of rows about subjects shared across regions")] = 0.15,
    headers: Annotated[str, typer.Option(help="codes (CF_XDR_MC) or names (行政相对人名称)")] = "codes",
    encoding: Annotated[str, typer.Option(help="utf-8, utf-8-sig or gb18030 (CSV only)")] = "utf-8",
    first_row: Annotated[int, typer.Option(help="number the documents from here")] = 0,
    as_of: Annotated[
        str, typer.Option(help="rows are decided in the year before this day, YYYY-MM-DD (default: today in China)")
    ] = "",
) -> None:
    """Generate sample data in the national 双公示 format: the same file for the same seed and --as-of day."""
    from credex.adapters.samples import synth  # sample generators stay off every other command's path

    if kind not in ("penalty", "licence") or headers not in ("codes", "names"):
        raise fail("--kind is penalty or licence; --headers is codes or names")
    chosen_kind: synth.Kind = "penalty" if kind == "penalty" else "licence"
    chosen_headers: synth.HeaderStyle = "codes" if headers == "codes" else "names"
    if encoding not in ("utf-8", "utf-8-sig", "gb18030"):
        raise fail("--encoding is utf-8, utf-8-sig or gb18030")
    spec = synth.SynthSpec(
        region=region,
        kind=chosen_kind,
        rows=rows,
        seed=seed,
        bad_share=bad_share,
        shared_share=shared_share,
        first_row=first_row,
    )
    if as_of:
        try:
            spec.anchor = dt.date.fromisoformat(as_of)
        except ValueError:
            raise fail(f"--as-of {as_of!r} is not a date YYYY-MM-DD") from None
    summary = synth.write(out, spec, headers=chosen_headers, encoding=encoding)
    console.print(f"wrote {out}: {summary.rows} rows, {summary.bad} with a deliberate defect")
    for defect, n in summary.defects.most_common():
        console.print(f"    {n:>6} × {defect}")
