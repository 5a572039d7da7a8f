"""Hostile rows never crash an adapter: each lands in quarantine with a reason, the rest go on."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credex.adapters.profile import MappingContext, Profile, Rejection
from credex.adapters.samples import synth
from credex.adapters.tables import object_row
from credex.crypto.pseudonym import Pseudonymizer
from credex.domain.reasons import Reason
from credex.node.feeds.mapping import Reader, RowMapper

NATIONAL = Profile.load("national")
CONTEXT = MappingContext(origin="310000", pseudonymizer=Pseudonymizer(b"k" * 32), today=dt.date(2026, 11, 21))
VALID = [r.values for r in synth.generate(synth.SynthSpec(region="310000", rows=400, bad_share=0.0, person_share=0.0))]
HEADER = [code for code, _ in synth.PENALTY_COLUMNS]

# (column, hostile value strategy, the reasons it may be rejected with)
control = st.text(min_size=1, max_size=20).map(lambda t: t + "\x07")
HOSTILE = {
    "control": ("CF_XDR_MC", control, {Reason.FIELD_CONTROL, Reason.FIELD_FORMULA}),
    "huge": ("CF_SY", st.integers(4001, 20000).map(lambda n: "违" * n), {Reason.FIELD_TOO_LONG}),
    "formula": (
        "CF_XDR_MC",
        st.sampled_from(["=cmd|' /C calc'!A0", "@SUM(1+1)", '+HYPERLINK("x")', "-IMPORTXML(1)"]),
        {Reason.FIELD_FORMULA},
    ),
    "date": (
        "CF_JDRQ",
        st.sampled_from(["1800-01-01", "9999-12-31", "2026-02-30", "yesterday", "0", "2099-13-01", "44274.5.1"]),
        {Reason.DATE_OUT_OF_RANGE, Reason.DATE_INVALID, Reason.DATE_FORMAT, Reason.DATE_FUTURE},
    ),
    "amount": (
        "CF_NR_FK",
        st.sampled_from(["-1", "-0.01", "1e30", "NaN", "inf", "12,3.4.5", "三万", "1e9"]),
        {Reason.AMOUNT_NEGATIVE, Reason.AMOUNT_ABSURD, Reason.AMOUNT_FORMAT},
    ),
    "code": (
        "CF_XDR_SHXYM",
        st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=25),
        # Any 错码; or nothing at all ("-", "--"), or a formula ("-A..."). A random string is a
        # valid code only by a 1 in 31 chance of both check characters.
        {
            *(reason for reason in Reason if reason.wrong_code),
            Reason.FIELD_MISSING,
            Reason.USCC_MISSING,
            Reason.FIELD_FORMULA,
        },
    ),
}


@st.composite
def hostile_rows(draw: st.DrawFn) -> tuple[list[dict[str, str]], list[tuple[int, str]]]:
    rows = [dict(r) for r in draw(st.lists(st.sampled_from(VALID), min_size=20, max_size=120))]
    spoiled: list[tuple[int, str]] = []
    for index in draw(st.sets(st.integers(0, len(rows) - 1), min_size=1, max_size=len(rows))):
        kind = draw(st.sampled_from(sorted(HOSTILE)))
        column, values, _ = HOSTILE[kind]
        rows[index][column] = draw(values)
        spoiled.append((index, kind))
    return rows, spoiled


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_rows())
def test_hostile_values_in_csv_land_in_quarantine_with_their_reason(
    tmp_path_factory: object, case: tuple[list[dict[str, str]], list[tuple[int, str]]]
) -> None:
    rows, spoiled = case
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HEADER)
    writer.writerows([[row.get(c, "") for c in HEADER] for row in rows])
    path = Path(tmp_path_factory.mktemp("hostile")) / "rows.csv"  # type: ignore[attr-defined]
    path.write_text(buffer.getvalue(), encoding="utf-8")
    outcomes = _map_file(path)
    assert len(outcomes) == len(rows)
    for index, kind in spoiled:
        outcome = outcomes[index]
        assert isinstance(outcome, Rejection), f"hostile {kind} value was accepted: {rows[index][HOSTILE[kind][0]]!r}"
        reasons = set(outcome.reasons)
        assert reasons & HOSTILE[kind][2], (kind, reasons)
    assert_catalogued(outcomes)


def assert_catalogued(outcomes: Iterable[object]) -> None:
    """Every reason given is a member of the catalogue, not text that merely spells a code."""
    for outcome in outcomes:
        if isinstance(outcome, Rejection):
            assert all(isinstance(reason, Reason) for reason in outcome.reasons), outcome.reasons


def _map_file(path: Path) -> list[object]:
    reader = Reader(path, NATIONAL, CONTEXT, batch_size=50)
    outcomes: dict[int, object] = {}
    while (batch := reader.next_batch()) is not None:
        for taken in batch.records:
            outcomes[int(taken.provenance.locator.split()[1])] = taken
        for _, rejection in batch.rejections:
            outcomes[int(rejection.locator.split()[1])] = rejection
    return [outcomes[line] for line in sorted(outcomes)]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=5, max_size=30))
def test_random_bytes_and_wrong_encodings_are_rejected_row_by_row(tmp_path_factory: object, junk: list[bytes]) -> None:
    good = [",".join(csv_line(r)) for r in VALID[:60]]
    lines = [",".join(HEADER).encode(), *(g.encode() for g in good)]
    for blob in junk:
        lines.append(blob.replace(b"\n", b" ").replace(b"\r", b" ") + b"\xff")  # never valid UTF-8
        lines.append("中文字段".encode("gb18030") + b"," + blob.replace(b"\n", b" ")[:20])
    path = Path(tmp_path_factory.mktemp("bytes")) / "junk.csv"  # type: ignore[attr-defined]
    path.write_bytes(b"\n".join(lines) + b"\n")
    outcomes = _map_file(path)
    accepted = [o for o in outcomes if not isinstance(o, Rejection)]
    rejected = [o for o in outcomes if isinstance(o, Rejection)]
    assert len(accepted) == 60, "the good rows still go through"
    assert all(r.reasons for r in rejected)
    assert len(rejected) >= len(junk)
    assert_catalogued(rejected)


def csv_line(row: dict[str, str]) -> list[str]:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([row.get(c, "") for c in HEADER])
    return [buffer.getvalue().rstrip("\r\n")]


@settings(max_examples=60, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=50),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=6),
        max_leaves=30,
    )
)
def test_any_json_value_from_an_api_is_a_row_or_a_rejection(item: object) -> None:
    mapper = RowMapper(Profile.load("zhejiang"), CONTEXT)
    outcome = mapper.map(object_row(json.loads(json.dumps(item)) if _jsonable(item) else str(item), "item 1"), "api")
    assert isinstance(outcome, Rejection) and outcome.reasons
    assert_catalogued([outcome])


def _jsonable(item: object) -> bool:
    try:
        json.dumps(item, allow_nan=False)
    except ValueError:
        return False
    return True
