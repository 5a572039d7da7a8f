"""``credex profile list`` and ``check``: which platforms a node can take in, and a dry run of one file."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from credex.adapters.profile import MappingContext, Profile, Rejection, shipped_profiles
from credex.crypto.pseudonym import Pseudonymizer
from credex.domain.publicity import PublicityRules, publicity_today
from credex.node.cli.app import console, profile_app
from credex.v1 import record_pb2

# How a platform hands its rows over, by the words its profile's description uses for it.
_TRANSPORTS = (
    ("前置库 tables", "前置库 tables (table poll)"),
    ("HTTP API", "HTTP API (paged pull)"),
    ("JSON Lines", "JSON Lines files (file drop)"),
    ("workbooks", "XLSX workbooks (file drop)"),
    ("CSV or XLSX", "CSV or XLSX files (file drop)"),
)


@dataclass(frozen=True)
class ProfileSummary:
    """What ``profile list`` shows of a profile: the platform it reads, how rows arrive, the record kinds."""

    name: str
    platform: str
    transport: str
    kinds: tuple[str, ...]


def summarize(profile: Profile) -> ProfileSummary:
    """Platform and transport from the profile's description (``<platform> <transport>: <contents>``).

    The profile files state both only in words; a description naming no known
    transport is read as files dropped in a folder, the default feed.
    """
    description = profile.spec.description
    platform, transport = description.split(":", 1)[0].strip(), "files (file drop)"
    for words, meaning in _TRANSPORTS:
        if words in description:
            platform, transport = platform.replace(words, "").strip() or platform, meaning
            break
    kinds = tuple(dict.fromkeys(k.kind for k in profile.spec.kinds))
    return ProfileSummary(profile.name, platform, transport, kinds)


@profile_app.command("list")
def profile_list() -> None:
    """The shipped profiles: each platform, how its rows arrive, and the record kinds it maps to."""
    table = Table(title="shipped profiles (adapters/profiles/*.toml; --profile NAME)", title_justify="left")
    for column in ("profile", "platform", "transport", "record kinds"):
        table.add_column(column)
    for name in shipped_profiles():
        summary = summarize(Profile.load(name))
        kinds = ", ".join(k.removeprefix("KIND_").lower() for k in summary.kinds)
        table.add_row(summary.name, summary.platform, summary.transport, kinds)
    console.print(table)


@profile_app.command("check")
def profile_check(
    file: Annotated[Path, typer.Argument(help="a platform export: .csv, .xlsx, .jsonl, or .json (API or table dump)")],
    profile: Annotated[str, typer.Option(help="profile name or .toml file")] = "national",
    origin: Annotated[str, typer.Option(help="origin the records would be published under")] = "310000",
    show: Annotated[int, typer.Option(help="how many mapped records and rejections to show")] = 5,
) -> None:
    """Dry run: map a file through a profile and show the records and the rejections, touching no ledger."""
    from google.protobuf.json_format import MessageToDict

    from credex.node.feeds import Reader

    chosen = Profile.load(profile)
    # A throwaway pseudonym key: a dry run must not need (or reveal) the federation's.
    context = MappingContext(
        origin=origin, publicity=PublicityRules(), pseudonymizer=Pseudonymizer(os.urandom(32)), today=publicity_today()
    )
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    examples: list[dict[str, object]] = []
    rejected: list[Rejection] = []
    rows = 0
    reader = Reader(file, chosen, context, batch_size=1000)
    while (batch := reader.next_batch()) is not None:
        rows += batch.rows
        for record in (taken.record for taken in batch.records):
            kinds[record_pb2.Kind.Name(record.kind)] += 1
            if len(examples) < show:
                examples.append(MessageToDict(record, preserving_proto_field_name=True))
        for _, rejection in batch.rejections:
            reasons.update(rejection.reasons)
            if len(rejected) < show:
                rejected.append(rejection)
    accepted = sum(kinds.values())
    console.print(
        f"{file}: {rows} rows = {accepted} would be accepted + {rows - accepted} quarantined"
        f" (profile {chosen.name}, nothing written)",
        soft_wrap=True,
    )
    for kind, n in kinds.most_common():
        console.print(f"  {n:>7} × {kind}")
    for reason, n in reasons.most_common():
        console.print(f"  [red]{n:>7} × {reason}[/]")
    for example in examples:
        console.print_json(json.dumps(example, ensure_ascii=False))
    for rejection in rejected:
        console.print(
            f"[red]{rejection.locator}[/]: " + "; ".join(p.message for p in rejection.problems), soft_wrap=True
        )
