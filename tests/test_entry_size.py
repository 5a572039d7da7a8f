"""Every event is a log entry that a tlog-tiles entry bundle can carry: at most 65,535 bytes, known before signing.

C2SP tlog-tiles gives each entry of a bundle a big-endian uint16 length, so a log
that held a longer entry could not serve it. credex never signs one: a platform's
row whose event would be too long (less room kept for the record's later events)
is quarantined with its reason, and takes no seq; an operator's change that would
be too long is refused with the sizes, and changes nothing.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.crypto.envelope import canonical_bytes, seal, sealed_size
from credex.crypto.keys import SigningKey
from credex.crypto.tiles import MAX_ENTRY, entry_bundle
from credex.domain.reasons import Reason
from credex.node.ledger import EntryTooLarge
from credex.node.store import tiles

from .conftest import TestFederation

NATIONAL = Profile.load("national")
KEY = SigningKey.generate()
ROW = next(synth.generate(synth.SynthSpec(region="310000", rows=1, bad_share=0.0, person_share=0.0))).values
WIDE = "𠀀"  # four bytes in UTF-8; a field holds at most 4,000 characters


def row(number: int, **fields: str) -> dict[str, str]:
    return {**ROW, "CF_WSH": f"沪市监罚〔2026〕{number}号", **fields}


# About 61 KB signed: fits (under 65,535 less the room kept), but not with a long reason added.
BIG = row(2, CF_SY=WIDE * 4000, CF_YJ="违" * 4000, CF_NR="违" * 4000, BZ="违" * 4000, CF_NR_ZKDX="违" * 3000)
# About 80 KB signed: no log entry can hold it.
HUGE = row(3, **{field: WIDE * 4000 for field in ("CF_SY", "CF_YJ", "CF_NR", "BZ", "CF_NR_ZKDX")})


def write(path: Path, rows: list[dict[str, str]]) -> Path:
    columns = [code for code, _ in synth.PENALTY_COLUMNS]
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([r.get(c, "") for c in columns] for r in rows)
    return path


@settings(max_examples=60)
@given(st.integers(1, 150_000), st.text(max_size=80))
def test_the_length_of_a_signed_envelope_is_known_before_signing(payload_size: int, payload_type: str) -> None:
    envelope = canonical_bytes(seal(KEY, b"\x01" * payload_size, payload_type))
    assert sealed_size(payload_size, KEY.key_id, payload_type) == len(envelope)


async def test_a_row_too_long_for_a_log_entry_is_quarantined_and_the_others_signed_without_a_gap(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    path = write(tmp_path / "penalties.csv", [row(1), BIG, HUGE, row(4)])
    [report] = await node.ingest([path], NATIONAL)
    assert (report.rows_in, report.accepted, report.quarantined, report.new) == (4, 3, 1, 3)
    assert report.reasons == Counter({Reason.ROW_ENTRY_TOO_LARGE: 1})
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        [held] = await conn.fetch("SELECT locator, reasons, messages FROM quarantine")
        assert held["reasons"] == [Reason.ROW_ENTRY_TOO_LARGE.value]
        assert "a log entry may be at most 64,511" in held["messages"][0], held["messages"]
        taken = await conn.fetchrow(
            "SELECT accepted, quarantined, first_seq, last_seq FROM ingest_files WHERE file_name = 'penalties.csv'"
        )
        assert taken is not None and tuple(taken) == (3, 1, 1, 3)
        seqs = [r["seq"] for r in await conn.fetch("SELECT seq FROM events WHERE origin = '310000' ORDER BY seq")]
        assert seqs == [1, 2, 3]
        assert await conn.fetchval("SELECT max(octet_length(envelope)) FROM events") > 60_000  # BIG is held
        assert await conn.fetchval("SELECT tiled_seq FROM origin_progress WHERE origin = '310000'") == 3
        envelopes = await tiles.entries(conn, "310000", 0, 3)
        assert envelopes is not None
        assert len(entry_bundle(envelopes)) == sum(2 + len(e) for e in envelopes)  # the bundle the log serves


async def test_an_operators_change_too_long_for_a_log_entry_is_refused_and_changes_nothing(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    await node.ingest([write(tmp_path / "penalties.csv", [row(1), BIG])], NATIONAL)
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        big = await conn.fetchval("SELECT record_id FROM records WHERE octet_length(record) > 60000")
        async with conn.transaction():
            with pytest.raises(EntryTooLarge, match=r"would be [\d,]+ bytes; a log entry may be at most 65,535"):
                await node.ledger.revoke(conn, big, "撤销理由" * 400)
        assert await conn.fetchval("SELECT seq FROM ledger_head WHERE origin = '310000'") == 2
        assert await conn.fetchval("SELECT count(*) FROM events") == 2

        async with conn.transaction():  # a short reason fits
            result = await node.ledger.revoke(conn, big, "行政处罚决定已被撤销")
        assert result.seqs == [3]
        assert await conn.fetchval("SELECT max(octet_length(envelope)) FROM events") <= MAX_ENTRY
