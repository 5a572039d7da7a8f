"""The wanted ranges: the one way what intake and the checkpoint keeper find missing reaches sync.

Intake and the keeper only put, sync only takes, and neither side imports or calls
the other: the arrows between the floors point down. The queue holds one entry per
origin and reason however much is put, so a flood of notices cannot grow it.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from credex.node.chain import WantedRanges, Why

NODE = Path(__file__).resolve().parent.parent / "node"


def imports_of(package: str) -> set[str]:
    """Every module the files of ``node/<package>`` import."""
    found: set[str] = set()
    for path in (NODE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


def test_intake_and_the_chain_never_import_sync() -> None:
    for package in ("intake", "chain"):
        assert not {m for m in imports_of(package) if m.startswith("credex.node.sync")}, package


def test_what_is_put_is_taken_once_merged_by_origin_and_reason() -> None:
    wanted = WantedRanges()
    wanted.put("320000", 10, Why.GAP, held=4)
    wanted.put("320000", 30, Why.GAP, held=9)  # the same gap seen again, further on
    wanted.put("320000", 12, Why.CHECKPOINT)
    wanted.put("330000", 7, Why.WITHHELD)
    taken = {(w.origin, w.why): w for w in wanted.take()}
    assert set(taken) == {("320000", Why.GAP), ("320000", Why.CHECKPOINT), ("330000", Why.WITHHELD)}
    gap = taken[("320000", Why.GAP)]
    assert (gap.upto, gap.held) == (30, 4)  # the furthest seq wanted; held as when it was first noticed
    assert wanted.take() == []


def test_a_flood_of_notices_holds_one_entry_per_origin_and_reason() -> None:
    wanted = WantedRanges()
    for seq in range(100_000):
        wanted.put("320000", seq, Why.WITHHELD)
    assert len(wanted) == 1
    [only] = wanted.take()
    assert only.upto == 99_999


async def test_a_withheld_seq_wakes_sync_at_once_and_a_gap_waits_for_the_next_probe() -> None:
    wanted = WantedRanges()
    wanted.put("320000", 7, Why.GAP)  # Kafka gets one probe to fill a gap: no hurry
    started = asyncio.get_running_loop().time()
    await wanted.urgent(0.2)
    assert asyncio.get_running_loop().time() - started >= 0.2
    wanted.put("320000", 9, Why.WITHHELD)  # only sync can bring it
    await asyncio.wait_for(wanted.urgent(3600), timeout=60)  # returns at once, not after the probe pause
