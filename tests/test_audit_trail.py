"""No data leaves a node without an audit row, and one caller's row never fails another caller's call.

Regression tests of issue 7's probes: a NUL in one caller's purpose failed the
group-committed audit write of everyone batched with it; walking GetInclusionProof
read every record with no audit row; FetchEvents, denied and invalid attempts
were not audited; a government lookup without a purpose was answered. And of the
security review of the fix: every invalid call wrote a full row, so any caller
could grow the audit table without limit, and nothing was ever trimmed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from credex.domain import persons
from credex.domain.persons import WITHHELD, cannot_hold_ric, looks_like_ric, withhold
from credex.domain.persons import fold as persons_fold
from credex.node.services import audit_trail, refusals
from credex.node.services.audit_trail import AuditEntry, AuditLog, AuditUnavailable, withheld
from credex.v1 import (
    exchange_pb2,
    exchange_pb2_grpc,
    log_pb2,
    log_pb2_grpc,
    lookup_pb2,
    lookup_pb2_grpc,
    quality_pb2,
    quality_pb2_grpc,
)

from .callers import (
    PUBLIC,
    audit_rows,
    calls_audited,
    client_channel,
    government_channel,
    peer_channel,
    serve_sample,
)
from .conftest import TestFederation, eventually


async def status_of(call: Any) -> str:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return "OK"


async def test_a_nul_in_one_callers_request_fails_none_of_the_lookups_batched_with_it(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, summary = await serve_sample(federation, tmp_path)
    subjects = sorted(summary.shared_subjects)
    async with government_channel(federation, node) as good, client_channel(federation, node, PUBLIC) as bad:
        office, prober = lookup_pb2_grpc.LookupServiceStub(good), lookup_pb2_grpc.LookupServiceStub(bad)

        async def lookups(stub: lookup_pb2_grpc.LookupServiceAsyncStub, requests: list[Any]) -> Counter[str]:
            share = asyncio.Semaphore(16)  # within one caller's share: this test is about the audit, not overload

            async def one(request: lookup_pb2.GetProfileRequest) -> str:
                async with share:
                    return await status_of(stub.GetProfile(request, timeout=60))

            return Counter(await asyncio.gather(*(one(r) for r in requests)))

        good_requests = [
            lookup_pb2.GetProfileRequest(uscc=subjects[i % len(subjects)], purpose="资格审查") for i in range(80)
        ]
        bad_requests = [lookup_pb2.GetProfileRequest(uscc=subjects[0], purpose=f"probe\x00{i}") for i in range(40)]
        bad_requests += [lookup_pb2.GetProfileRequest(uscc=f"{subjects[0]}\x00{i}") for i in range(40)]
        answered, refused = await asyncio.gather(lookups(office, good_requests), lookups(prober, bad_requests))
    assert answered == Counter({"OK": 80})
    assert refused == Counter({"INVALID_ARGUMENT": 80})
    expected = Counter({("government-office", "OK"): 80, (PUBLIC, "INVALID_ARGUMENT"): 80})
    rows = await eventually(lambda: calls_audited(node, "GetProfile", expected))
    probes = [r for r in rows if r["caller"] == PUBLIC and r["calls"] == 1]
    assert probes and all("\\x00" in r["purpose"] + r["subject_id"] for r in probes)  # what was sent, storable


async def test_a_caller_sending_invalid_requests_in_a_loop_is_summed_up_and_every_call_counted(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, _ = await serve_sample(federation, tmp_path, rows=10)
    junk = [lookup_pb2.GetProfileRequest(uscc=f"9131\x07{i}") for i in range(500)]
    started = time.monotonic()
    async with client_channel(federation, node, PUBLIC) as channel:
        stub = lookup_pb2_grpc.LookupServiceStub(channel)
        share = asyncio.Semaphore(8)  # within one caller's share: every call reaches validation

        async def one(request: lookup_pb2.GetProfileRequest) -> str:
            async with share:
                return await status_of(stub.GetProfile(request, timeout=60))

        answers = Counter(await asyncio.gather(*(one(r) for r in junk)))
    periods = math.ceil((time.monotonic() - started) / refusals.SUMMARY_SECONDS) + 1
    assert answers == Counter({"INVALID_ARGUMENT": 500})
    rows = await eventually(lambda: calls_audited(node, "GetProfile", Counter({(PUBLIC, "INVALID_ARGUMENT"): 500})))
    # Each summary period: a few rows with what was sent, then one row for the rest of them.
    assert len(rows) <= periods * (refusals.REFUSAL_ROWS + 1) and len(rows) < 500
    summed = [r for r in rows if r["calls"] > 1]
    assert summed and all(r["detail"].startswith(f"{r['calls']} calls refused in") for r in summed)
    assert all("control character U+0007" in r["detail"] for r in rows)
    own_rows = [r for r in rows if r["calls"] == 1]
    assert all(r["subject_id"].startswith("9131\\x07") for r in own_rows)  # what the caller sent


async def test_audit_rows_older_than_the_retention_are_trimmed(federation: TestFederation) -> None:
    node = await federation.start_node("310000", audit={"retention_days": 30, "trim_every_seconds": 0.2})
    assert node.pool is not None
    now = dt.datetime.now(dt.UTC)
    rows = [
        (now - dt.timedelta(days=age), f"aged-{age}", "public", "GetProfile", "", "", 0, "OK")
        for age in (400, 31, 29, 0)
    ]
    async with node.pool.acquire() as conn:
        await conn.copy_records_to_table(
            "audit_log",
            records=rows,
            columns=("at", "caller", "role", "method", "subject_id", "purpose", "answered", "status"),
        )

    async def kept() -> list[str] | None:
        callers = sorted(r["caller"] for r in await audit_rows(node, "GetProfile"))
        return callers if callers == ["aged-0", "aged-29"] else None

    await eventually(kept)


async def test_an_audit_retention_of_zero_days_keeps_the_trail_forever(federation: TestFederation) -> None:
    # The node's own retention tasks (row trim, partition drops) are off too, so none of them races the writer's.
    node = await federation.start_node("310000", audit={"retention_days": 0})
    assert node.pool is not None
    audit = AuditLog(node.pool)
    audit.start()
    audit.retain(0, every_seconds=0.01)
    try:
        await audit.record(entry("ancient", at=dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
        assert audit.trimming is False
    finally:
        await audit.stop()
    assert [r["caller"] for r in await audit_rows(node)] == ["ancient"]


async def test_an_unstorable_entry_fails_alone_and_its_batch_is_written(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    assert node.pool is not None
    audit = AuditLog(node.pool, linger=0.05)
    audit.start()
    try:
        good = [audit.record(entry(f"caller-{i}")) for i in range(20)]
        bad = audit.record(entry("clockless", at="not a time"))  # the database refuses it whatever is escaped
        results = await asyncio.wait_for(asyncio.gather(*good, bad, return_exceptions=True), timeout=60)
    finally:
        await audit.stop()
    assert results[:20] == [None] * 20
    assert isinstance(results[20], AuditUnavailable)
    assert sorted(r["caller"] for r in await audit_rows(node)) == sorted(f"caller-{i}" for i in range(20))


async def test_a_batch_calls_rows_are_committed_all_or_none_and_alone_fail_no_other_call(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")
    assert node.pool is not None
    audit = AuditLog(node.pool, max_batch=10, linger=0.05)
    audit.start()
    try:
        # A check of 25 subjects has 25 rows, more than one batch holds; one row of another such call is unstorable.
        whole = audit.record_all([entry(f"batch-{i}") for i in range(25)])
        spoilt = audit.record_all([entry(f"spoilt-{i}") for i in range(5)] + [entry("spoilt-x", at="not a time")])
        others = [audit.record(entry(f"caller-{i}")) for i in range(5)]
        results = await asyncio.wait_for(asyncio.gather(whole, spoilt, *others, return_exceptions=True), timeout=60)
    finally:
        await audit.stop()
    assert results[0] is None and results[2:] == [None] * 5
    assert isinstance(results[1], AuditUnavailable)
    stored = sorted(r["caller"] for r in await audit_rows(node))
    assert stored == sorted([f"batch-{i}" for i in range(25)] + [f"caller-{i}" for i in range(5)])


async def test_a_call_whose_rows_do_not_fit_in_the_queue_is_refused_whole_and_queues_nothing(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")
    assert node.pool is not None
    audit = AuditLog(node.pool, max_queue=8)  # not started: what is queued stays queued
    waiting = asyncio.ensure_future(audit.record_all([entry(f"first-{i}") for i in range(5)]))
    await asyncio.sleep(0)
    with pytest.raises(AuditUnavailable, match="queue full"):
        await audit.record_all([entry(f"second-{i}") for i in range(4)])
    assert audit.note(entry("summary")) and audit.note(entry("summary")) and audit.note(entry("summary"))
    assert not audit.note(entry("one too many"))
    await audit.stop()
    with pytest.raises(AuditUnavailable):
        await waiting
    assert await audit_rows(node) == []


async def test_stopping_the_audit_log_resolves_every_waiting_entry(federation: TestFederation) -> None:
    node = await federation.start_node("310000")
    assert node.pool is not None
    audit = AuditLog(node.pool, linger=0.05)
    audit.start()
    waiting = [asyncio.ensure_future(audit.record(entry(f"caller-{i}"))) for i in range(50)]
    await asyncio.sleep(0)  # the writer takes the first batch in hand
    await audit.stop()
    results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), timeout=30)
    assert all(r is None or isinstance(r, AuditUnavailable) for r in results)
    with pytest.raises(AuditUnavailable):
        await audit.record(entry("late"))


async def test_refusals_summed_up_and_rows_queued_when_the_trail_stops_are_written_before_it_stops(
    federation: TestFederation,
) -> None:
    node = await federation.start_node("310000")
    assert node.pool is not None
    audit = AuditLog(node.pool, linger=0.05)
    audit.start()
    summing = refusals.Refusals(audit, "310000")
    probe = replace(entry("prober"), status="INVALID_ARGUMENT", detail="uscc is not a USCC")
    for _ in range(20):
        summing.note(probe)
    assert audit.note(entry("noted"))
    await audit.stop()  # well within the summary's second
    rows = await audit_rows(node)
    assert sorted(r["calls"] for r in rows if r["caller"] == "prober") == [1] * refusals.REFUSAL_ROWS + [
        20 - refusals.REFUSAL_ROWS
    ]
    assert [r["caller"] for r in rows if r["caller"] != "prober"] == ["noted"]


async def test_a_lone_call_is_written_at_once_though_writes_came_just_before(federation: TestFederation) -> None:
    """One call at a time: no other call in progress can join its batch, so no writer waits for company
    (here for an hour), however recently the last batch was written."""
    node = await federation.start_node("310000")
    assert node.pool is not None
    audit = AuditLog(node.pool, linger=3600)
    audit.expect(lambda: 1)
    audit.start()
    try:
        for i in range(3):
            await asyncio.wait_for(audit.record(entry(f"alone-{i}")), timeout=60)  # a bound on a hang only
    finally:
        await audit.stop()
    assert [row["caller"] for row in await audit_rows(node)][-3:] == ["alone-0", "alone-1", "alone-2"]


async def test_under_load_a_writer_waits_for_company_though_every_call_in_progress_is_in(
    federation: TestFederation,
) -> None:
    """Calls on their way from callers are not in progress yet: after a batch of several calls, a writer waits
    its linger for them (here a second: long enough that a stall of a busy machine does not hide the wait from the
    test's look) even when no call in progress is left to hand in rows."""
    node = await federation.start_node("310000")
    assert node.pool is not None
    audit = AuditLog(node.pool, linger=1.0)
    in_progress = 0
    audit.expect(lambda: in_progress)
    audit.start()
    try:
        in_progress = 2
        await asyncio.wait_for(asyncio.gather(audit.record(entry("a")), audit.record(entry("b"))), timeout=60)
        in_progress = 1
        alone = asyncio.ensure_future(audit.record(entry("after a batch")))

        async def gathering() -> bool:
            return audit.gathering

        await eventually(gathering, interval=0.001)
        await asyncio.wait_for(alone, timeout=60)
    finally:
        await audit.stop()
    assert [row["caller"] for row in await audit_rows(node)][-3:] == ["a", "b", "after a batch"]


async def test_walking_inclusion_proofs_leaves_one_row_per_call_under_the_records_subject(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, _ = await serve_sample(federation, tmp_path, rows=30)
    assert node.keeper is not None
    keeper = node.keeper
    await eventually(lambda: _checkpoint_covers(keeper, 30))
    async with client_channel(federation, node, PUBLIC) as channel:
        stub = log_pb2_grpc.LogServiceStub(channel)
        answers = [
            await status_of(stub.GetInclusionProof(log_pb2.GetInclusionProofRequest(origin="310000", seq=seq)))
            for seq in range(1, 33)  # two past the end of the log
        ]
    assert answers.count("OK") >= 1 and answers[-2:] == ["NOT_FOUND", "NOT_FOUND"]
    rows = await audit_rows(node, "GetInclusionProof")
    assert [r["status"] for r in rows] == answers
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        subjects = {r["subject_id"] for r in await conn.fetch("SELECT subject_id FROM records")}
    assert all(r["subject_id"] in subjects and r["answered"] == 1 for r in rows if r["status"] == "OK")


async def test_fetch_events_is_audited_with_the_range_served_and_refusals_too(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, _ = await serve_sample(federation, tmp_path, rows=20)
    request = exchange_pb2.FetchEventsRequest(origin="310000", from_seq=3, limit=10)
    async with peer_channel(federation, node, "320000") as channel:
        response = await exchange_pb2_grpc.ExchangeServiceStub(channel).FetchEvents(request)
    async with government_channel(federation, node) as channel:
        denied = await status_of(exchange_pb2_grpc.ExchangeServiceStub(channel).FetchEvents(request))
    assert len(response.envelopes) == 10 and denied == "PERMISSION_DENIED"
    served, refused = await audit_rows(node, "FetchEvents")
    assert (served["caller"], served["role"], served["answered"], served["detail"]) == (
        "320000",
        "peer",
        10,
        "310000#3..12",
    )
    assert (refused["caller"], refused["status"], refused["answered"]) == ("government-office", "PERMISSION_DENIED", 0)


async def test_every_call_answered_or_refused_is_audited_with_its_status(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, summary = await serve_sample(federation, tmp_path, rows=20)
    subject = sorted(summary.shared_subjects)[0]
    async with government_channel(federation, node) as channel, client_channel(federation, node, PUBLIC) as public:
        lookup, log = lookup_pb2_grpc.LookupServiceStub(channel), log_pb2_grpc.LogServiceStub(channel)
        outcomes = [
            await status_of(lookup.GetProfile(lookup_pb2.GetProfileRequest(uscc=subject))),
            await status_of(lookup.GetProfile(lookup_pb2.GetProfileRequest(uscc=subject, purpose="x" * 501))),
            await status_of(lookup.GetRecord(lookup_pb2.GetRecordRequest(record_id="310000-none", purpose="复核"))),
            await status_of(
                log.GetConsistencyProof(log_pb2.GetConsistencyProofRequest(origin="330000", old_size=1, new_size=5))
            ),
            await status_of(
                quality_pb2_grpc.QualityServiceStub(public).GetQualityReport(quality_pb2.GetQualityReportRequest())
            ),
            await status_of(public.unary_unary("/credex.v1.LogService/GetCheckpoint", None, None)(b"\xff")),
            # A proof carries the whole record: the purpose rule holds for it as for a lookup.
            await status_of(
                log.GetInclusionProof(log_pb2.GetInclusionProofRequest(origin="310000", record_id="310000-none"))
            ),
        ]
    expected = ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "NOT_FOUND", "OUT_OF_RANGE", "PERMISSION_DENIED"]
    assert outcomes == [*expected, "INVALID_ARGUMENT", "INVALID_ARGUMENT"]
    rows = await audit_rows(node)
    assert [(r["method"], r["status"]) for r in rows] == [
        ("GetProfile", "INVALID_ARGUMENT"),
        ("GetProfile", "INVALID_ARGUMENT"),
        ("GetRecord", "NOT_FOUND"),
        ("GetConsistencyProof", "OUT_OF_RANGE"),
        ("GetQualityReport", "PERMISSION_DENIED"),
        ("GetCheckpoint", "INVALID_ARGUMENT"),
        ("GetInclusionProof", "INVALID_ARGUMENT"),
    ]
    assert rows[0]["detail"].startswith("purpose is required for government callers")
    assert rows[6]["detail"].startswith("purpose is required for government callers")
    assert rows[4]["role"] == "public" and rows[4]["caller"] == PUBLIC


async def test_the_purpose_rule_for_government_callers_is_a_setting(federation: TestFederation, tmp_path: Path) -> None:
    node, summary = await serve_sample(federation, tmp_path, rows=10, access={"purpose_required_for_government": False})
    async with government_channel(federation, node) as channel:
        profile = await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(
            lookup_pb2.GetProfileRequest(uscc=sorted(summary.shared_subjects)[0])
        )
    assert profile.entries
    (row,) = await audit_rows(node)
    assert (row["status"], row["purpose"], row["answered"]) == ("OK", "", len(profile.entries))


def entry(caller: str, at: object = None) -> AuditEntry:
    return AuditEntry(
        caller=caller,
        role="public",
        method="GetProfile",
        subject_id="",
        purpose="",
        answered=0,
        status="OK",
        at=at if at is not None else dt.datetime.now(dt.UTC),  # type: ignore[arg-type]
    )


async def _checkpoint_covers(keeper: Any, size: int) -> bool:
    held = await keeper.latest("310000")
    return held is not None and held.size >= size


# -- ID numbers in caller text: the cheap ways round the search must never let one through ----


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_ascii_text_under_17_digits_is_passed_over_only_where_no_id_number_could_be_found(text: str) -> None:
    if cannot_hold_ric(text):
        assert not looks_like_ric(text)
        assert withheld(text) == withhold(text) == text


@given(
    st.one_of(
        st.text(alphabet="0123456789Xx -\t\u3000０１９Ｘ采购", max_size=60),
        st.text(alphabet=st.characters(max_codepoint=127), max_size=60),
        st.text(max_size=30),
    )
)
def test_ascii_without_spaces_is_folded_by_its_case_alone_and_keeps_every_position(text: str) -> None:
    """The fast way to fold an all-digit code must find the same runs, at the same places, as folding each character."""
    folded, at = persons._folded(text)
    each = [(part, index) for index, char in enumerate(text) for part in persons_fold(char)]
    assert folded == "".join(part for part, _ in each)
    assert (list(range(len(folded))) if at is None else at) == [index for _, index in each]


@given(
    st.sampled_from(["", "采购审查 ", "ｐｕｒｐｏｓｅ ", "due diligence for "]), st.sampled_from([" ", "", "\u3000"])
)
def test_an_id_number_is_withheld_every_time_however_often_clean_text_came_before(prefix: str, space: str) -> None:
    number = "11010519491231002X"
    spaced = space.join([number[:6], number[6:14], number[14:]])
    wide = spaced.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    for _ in range(3):
        assert withheld(prefix) == prefix  # remembered as clean
        for sent in (prefix + spaced, prefix + wide):
            kept = withheld(sent)
            assert kept == withhold(sent) and number not in persons_fold(kept) and WITHHELD in kept
    assert not any(number in persons_fold(text) for text in audit_trail._clean.texts)


# -- The fast ways to a storable row must give the row the full treatment gives ----------------

_TEXTS = st.one_of(
    st.sampled_from(["", "government-office", "91310115000012345X", "采购审查", "check R-1 R-2", "a" * 300]),
    st.sampled_from(["11010519491231002X", "采购 110105 19491231 002X", "ok\x00nul", "tab\there", "\ud800"]),
    st.text(max_size=40),
)
_COUNTS = st.sampled_from([0, 1, 3, -1, 2**31 - 1, 2**31])


@given(
    st.tuples(_TEXTS, _TEXTS, _TEXTS, _TEXTS, st.sampled_from(["OK", "NOT_FOUND", "OK\x01"])),
    st.lists(st.tuples(_TEXTS, _COUNTS, _TEXTS, st.sampled_from([1, 0, 2**31])), min_size=1, max_size=6),
)
def test_a_calls_rows_are_stored_exactly_as_each_row_alone_would_be(
    shared: tuple[str, str, str, str, str], varying: list[tuple[str, int, str, int]]
) -> None:
    caller, role, method, purpose, status = shared
    at = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)
    rows = [
        AuditEntry(caller, role, method, subject, purpose, answered, status, at, detail, calls)
        for subject, answered, detail, calls in varying
    ]
    full = tuple(row._made_storable() for row in rows)  # every field looked at, as for any row
    assert audit_trail.storable_all(rows) == full
    assert tuple(row.storable() for row in rows) == full
