"""Case messages between nodes: the durable outbox, signed delivery, and what a hostile sender gets.

A case filed on a node that is not the record's origin waits in the outbox until the
origin acknowledges it, across restarts of either side, and makes exactly one case
there. DeliverCase takes only a message signed by the calling member's own key, for a
record of the node called; anything else is refused with a reason and stores nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc

from credex.crypto.keys import SigningKey
from credex.domain.publicity import publicity_today
from credex.node.cases import case_id_of, messages
from credex.node.cases.courier import REPAIRS_SINCE
from credex.node.cases.filing import content_digest
from credex.node.runtime import Node
from credex.v1 import case_pb2, case_pb2_grpc, event_pb2, record_pb2

from .callers import government_channel, peer_channel
from .cases_support import (
    CALLERS,
    Regions,
    arrived,
    case_at,
    everywhere,
    objection,
    penalty,
    publish,
    refused,
    regions_fixture,  # noqa: F401 (the regions fixture)
    repair,
)
from .conftest import TestFederation, eventually


async def outbox(node: Node) -> list[dict[str, Any]]:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM case_outbox ORDER BY id")]


async def cases_held(node: Node) -> int:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM cases"))


async def test_a_case_filed_while_the_origin_is_down_is_delivered_once_after_both_sides_restart(
    regions: Regions,
) -> None:
    record = penalty(50)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    await regions.federation.stop_node("320000")
    filed = await regions.filer().FileObjection(objection(record, "while-down"), timeout=30)
    assert filed.case.delivery == "pending"

    async def tried_twice() -> bool:
        rows = await outbox(regions.shanghai)
        return len(rows) == 1 and int(rows[0]["attempts"]) >= 2 and rows[0]["delivered_at"] is None

    await eventually(tried_twice, timeout=60)
    # The filing node restarts too: the case waits in its database, not in memory.
    await regions.federation.stop_node("310000")
    regions.shanghai = await regions.federation.start_node("310000", **CALLERS)
    regions.jiangsu = await regions.federation.start_node("320000", **CALLERS)

    async def delivered() -> bool:
        rows = await outbox(regions.shanghai)
        return rows[0]["delivered_at"] is not None

    await eventually(delivered, timeout=90)
    row = await arrived(regions, filed.case.case_id)
    assert row["filed_on"] == "310000" and await cases_held(regions.jiangsu) == 1
    await everywhere(regions, record.record_id, disputed=True)
    shown = await regions.filer().GetCase(
        case_pb2.GetCaseRequest(case_id=filed.case.case_id, purpose="查询异议进度"), timeout=30
    )
    assert shown.delivery == "delivered to 320000 (submitted there)"

    # The same signed message delivered again (a retry after a lost acknowledgement) changes nothing.
    envelope = event_pb2.Envelope.FromString(bytes((await outbox(regions.shanghai))[0]["envelope"]))
    again = await deliver(regions, regions.jiangsu, "310000", envelope)
    assert (again.case_id, again.created) == (filed.case.case_id, False)
    assert await cases_held(regions.jiangsu) == 1
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn:
        disputes = await conn.fetchval(
            "SELECT count(*) FROM events WHERE record_id = $1 AND event_type = $2",
            record.record_id,
            event_pb2.EVENT_TYPE_DISPUTE,
        )
    assert disputes == 1


async def deliver(
    regions: Regions, node: Node, as_member: str, envelope: event_pb2.Envelope
) -> case_pb2.DeliverCaseResponse:
    stub: case_pb2_grpc.CaseServiceAsyncStub = case_pb2_grpc.CaseServiceStub(
        peer_channel(regions.federation, node, as_member)
    )
    answer: case_pb2.DeliverCaseResponse = await stub.DeliverCase(
        case_pb2.DeliverCaseRequest(envelope=envelope), timeout=30
    )
    return answer


def filing(record_id: str, subject: str, filed_on: str, request_id: str) -> case_pb2.CaseFiling:
    pb = case_pb2.CaseFiling(
        case_id=case_id_of(filed_on, "government-office", request_id),
        kind=case_pb2.CASE_KIND_OBJECTION,
        record_id=record_id,
        filed_on=filed_on,
        filer="government-office",
        on_behalf_of=subject,
        request_id=request_id,
        grounds="error",
        filed_at="2026-11-20T08:00:00+00:00",
    )
    pb.content_digest = content_digest(pb)
    return pb


def sealed(key: SigningKey, sender: str, body: case_pb2.CaseFiling) -> event_pb2.Envelope:
    return event_pb2.Envelope.FromString(messages.seal_message(key, messages.message_at(sender, body)))


async def test_forged_and_misrouted_case_messages_are_refused_and_store_nothing(regions: Regions) -> None:
    record = penalty(51)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    shanghai_key = regions.shanghai.ledger.key
    good = filing(record.record_id, record.subject.uscc, "310000", "forged")

    # Signed by Shanghai's key but sent by Zhejiang: the key is not the caller's.
    other_caller = await refused(deliver(regions, regions.jiangsu, "330000", sealed(shanghai_key, "310000", good)))
    assert other_caller.code() == grpc.StatusCode.PERMISSION_DENIED and "330000" in (other_caller.details() or "")

    # Changed after signing.
    tampered = sealed(shanghai_key, "310000", good)
    tampered.payload = tampered.payload.replace(b"error", b"omiss")
    bad_signature = await refused(deliver(regions, regions.jiangsu, "310000", tampered))
    assert bad_signature.code() == grpc.StatusCode.PERMISSION_DENIED and "signature" in (bad_signature.details() or "")

    # Signed by a key the trust bundle does not list.
    stranger = await refused(deliver(regions, regions.jiangsu, "310000", sealed(SigningKey.generate(), "310000", good)))
    assert stranger.code() == grpc.StatusCode.PERMISSION_DENIED and "not in the trust bundle" in (
        stranger.details() or ""
    )

    # A filing whose case id is not the one its content gives (an attempt to take over another case id).
    hijack = filing(record.record_id, record.subject.uscc, "310000", "hijack")
    hijack.case_id = good.case_id
    wrong_id = await refused(deliver(regions, regions.jiangsu, "310000", sealed(shanghai_key, "310000", hijack)))
    assert wrong_id.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Well signed, but not what a filing may hold: unknown grounds, an oversized statement.
    for field, value in (("grounds", "because"), ("statement", "长" * 501)):
        odd = filing(record.record_id, record.subject.uscc, "310000", f"odd-{field}")
        setattr(odd, field, value)
        odd.content_digest = content_digest(odd)
        shape = await refused(deliver(regions, regions.jiangsu, "310000", sealed(shanghai_key, "310000", odd)))
        assert shape.code() == grpc.StatusCode.INVALID_ARGUMENT and field in (shape.details() or "")

    # A well-signed filing for Jiangsu's record sent to Zhejiang, which is not its origin.
    misrouted = await refused(deliver(regions, regions.zhejiang, "310000", sealed(shanghai_key, "310000", good)))
    assert misrouted.code() == grpc.StatusCode.FAILED_PRECONDITION and "origin" in (misrouted.details() or "")

    # Not a member: a government office may not deliver, whatever it sends.
    government: case_pb2_grpc.CaseServiceAsyncStub = case_pb2_grpc.CaseServiceStub(
        government_channel(regions.federation, regions.jiangsu)
    )
    not_peer = await refused(
        government.DeliverCase(case_pb2.DeliverCaseRequest(envelope=sealed(shanghai_key, "310000", good)), timeout=30)
    )
    assert not_peer.code() == grpc.StatusCode.PERMISSION_DENIED

    for node in regions.nodes():
        assert await cases_held(node) == 0
    # The genuine message is taken, once.
    taken = await deliver(regions, regions.jiangsu, "310000", sealed(shanghai_key, "310000", good))
    assert taken.created and (await case_at(regions.jiangsu, good.case_id)) is not None


async def test_a_filing_the_origin_refuses_is_not_retried_and_closes_the_filing_nodes_copy_with_the_reason(
    regions: Regions,
) -> None:
    """The origin's judgement wins: Shanghai's clock says a serious penalty's year has passed, Jiangsu's does not."""
    record = penalty(52, severity=record_pb2.SEVERITY_SERIOUS)
    await publish(regions.jiangsu, [record], regions.shanghai)
    regions.shanghai.cases.clock = lambda: publicity_today() + dt.timedelta(days=400)
    filed = await regions.filer().FileRepair(repair(record, "origin-says-no"), timeout=30)
    assert filed.created and filed.case.eligibility.startswith("eligible")

    async def closed() -> dict[str, Any] | None:
        row = await case_at(regions.shanghai, filed.case.case_id)
        return row if row is not None and row["state"] == "not_accepted" else None

    row = await eventually(closed, timeout=60)
    assert str(row["delivery"]).startswith("refused by 320000: FAILED_PRECONDITION") and "too early" in str(
        row["delivery"]
    )
    sent = await outbox(regions.shanghai)
    assert sent[0]["refused"] and sent[0]["attempts"] == 1 and sent[0]["delivered_at"] is None
    assert await cases_held(regions.jiangsu) == 0
    shown = await regions.filer().GetCase(
        case_pb2.GetCaseRequest(case_id=filed.case.case_id, purpose="查询修复进度"), timeout=30
    )
    assert (shown.state, shown.status_label) == ("not_accepted", "未通过") and shown.steps[-1].actor == "320000"


async def test_the_filing_nodes_copy_follows_the_origins_decisions_and_serves_the_signed_decision(
    regions: Regions,
) -> None:
    record = penalty(53)
    await publish(regions.jiangsu, [record], regions.shanghai, regions.zhejiang)
    filer = regions.filer()
    filed = await filer.FileRepair(repair(record, "follow"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator = regions.operator()
    await operator.AcceptCase(case_pb2.AcceptCaseRequest(case_id=filed.case.case_id, accept=True), timeout=30)
    await operator.DecideCase(
        case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="approved", decided_by="苏州市市场监督管理局"),
        timeout=30,
    )
    ask = case_pb2.GetCaseRequest(case_id=filed.case.case_id, purpose="查询修复进度")

    async def done_at_shanghai() -> case_pb2.Case | None:
        case = await filer.GetCase(ask, timeout=30)
        return case if case.state == "done" else None

    copy = await eventually(done_at_shanghai, timeout=90)
    original = await operator.GetCase(case_pb2.GetCaseRequest(case_id=filed.case.case_id), timeout=30)
    assert [(s.actor, s.stage, s.state) for s in copy.steps] == [(s.actor, s.stage, s.state) for s in original.steps]
    assert copy.decision_number == original.decision_number and copy.status_label == "已完成"
    here = await filer.GetRepairDecision(ask, timeout=30)
    there = await operator.GetRepairDecision(ask, timeout=30)
    assert here.envelope == there.envelope

    # Only the record's origin speaks for a case: a status signed and sent by Zhejiang is refused.
    forged = case_pb2.CaseStatus(case_id=filed.case.case_id, state="withdrawn", version=99)
    envelope = event_pb2.Envelope.FromString(
        messages.seal_message(regions.zhejiang.ledger.key, messages.message_at("330000", forged))
    )
    refusal = await refused(deliver(regions, regions.shanghai, "330000", envelope))
    assert refusal.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await filer.GetCase(ask, timeout=30)).state == "done"


async def test_receipts_that_do_not_match_the_repair_are_refused_and_confirm_nothing(regions: Regions) -> None:
    record = penalty(54)
    await publish(regions.jiangsu, [record], regions.shanghai)
    await regions.federation.stop_node("330000")  # so the case stays propagating while we probe
    filed = await regions.filer().FileRepair(repair(record, "receipts"), timeout=30)
    await arrived(regions, filed.case.case_id)
    operator = regions.operator()
    await operator.AcceptCase(case_pb2.AcceptCaseRequest(case_id=filed.case.case_id, accept=True), timeout=30)
    await operator.DecideCase(case_pb2.DecideCaseRequest(case_id=filed.case.case_id, outcome="approved"), timeout=30)
    row = await case_at(regions.jiangsu, filed.case.case_id)
    assert row is not None
    seq = int(row["repair_seq"])
    key = regions.shanghai.ledger.key

    def receipt(**fields: object) -> event_pb2.Envelope:
        given: dict[str, object] = {
            "case_id": filed.case.case_id, "record_origin": "320000", "seq": seq, "checkpoint_size": seq, **fields
        }  # fmt: skip
        body = case_pb2.RepairReceipt(**given)  # type: ignore[arg-type]
        return event_pb2.Envelope.FromString(messages.seal_message(key, messages.message_at("310000", body)))

    for wrong, code in (
        ({"seq": seq + 1, "checkpoint_size": seq + 1}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"checkpoint_size": seq - 1}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"record_origin": "330000"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"case_id": "case-310000-00000000000000000000"}, grpc.StatusCode.FAILED_PRECONDITION),
    ):
        answer = await refused(deliver(regions, regions.jiangsu, "310000", receipt(**wrong)))
        assert answer.code() == code, wrong
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn:
        confirmed = await conn.fetch(
            "SELECT peer, seq FROM repair_confirmations WHERE case_id = $1", filed.case.case_id
        )
    # Only Shanghai's own courier, with the right seq, may have confirmed by now.
    assert all((r["peer"], r["seq"]) == ("310000", seq) for r in confirmed)
    case = await operator.GetCase(case_pb2.GetCaseRequest(case_id=filed.case.case_id), timeout=30)
    assert case.state == "propagating" and "330000" in case.unconfirmed_peers


async def test_a_filing_dated_in_the_future_or_not_dated_is_refused_so_a_member_cannot_move_the_origins_deadlines(
    regions: Regions,
) -> None:
    """A repair's result is due 10 working days from filing, so the origin checks the filing time it is given."""
    record = penalty(55)
    await publish(regions.jiangsu, [record], regions.shanghai)
    key = regions.shanghai.ledger.key
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    for n, filed_at in enumerate(("2999-01-01T00:00:00+00:00", tomorrow, "last tuesday", "")):
        dated = filing(record.record_id, record.subject.uscc, "310000", f"dated-{n}")
        dated.filed_at = filed_at
        dated.content_digest = content_digest(dated)
        answer = await refused(deliver(regions, regions.jiangsu, "310000", sealed(key, "310000", dated)))
        assert answer.code() == grpc.StatusCode.INVALID_ARGUMENT and "filed_at" in (answer.details() or ""), filed_at
    assert await cases_held(regions.jiangsu) == 0
    # A filing made a while ago (the origin was down) is taken, and keeps its own filing time.
    late = filing(record.record_id, record.subject.uscc, "310000", "dated-late")
    taken = await deliver(regions, regions.jiangsu, "310000", sealed(key, "310000", late))
    row = await case_at(regions.jiangsu, late.case_id)
    assert taken.created and row is not None and row["filed_at"] == dt.datetime.fromisoformat(late.filed_at)


async def test_a_filer_may_hold_only_so_many_undelivered_filings_for_an_origin_that_does_not_answer(
    regions: Regions,
) -> None:
    """Under a dead origin the outbox stays bounded per filer, and one filer's flood does not block another."""
    records = [penalty(n) for n in (56, 57, 58)]
    await publish(regions.jiangsu, records, regions.shanghai)
    await regions.federation.stop_node("320000")
    regions.shanghai.cases.max_undelivered_filings = 2
    filer = regions.filer()
    for n, record in enumerate(records[:2]):
        assert (await filer.FileObjection(objection(record, f"flood-{n}"), timeout=30)).created
    full = await refused(filer.FileObjection(objection(records[2], "flood-2"), timeout=30))
    assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "320000" in (full.details() or "")
    assert await cases_held(regions.shanghai) == 2 and len(await outbox(regions.shanghai)) == 2
    # Another caller of the same node still files.
    other = regions.operator(regions.shanghai)
    assert (await other.FileObjection(objection(records[2], "other-filer"), timeout=30)).created

    regions.jiangsu = await regions.federation.start_node("320000", **CALLERS)

    async def all_delivered() -> bool:
        return all(row["delivered_at"] is not None for row in await outbox(regions.shanghai))

    await eventually(all_delivered, timeout=90)
    assert (await filer.FileObjection(objection(records[2], "flood-3"), timeout=30)).created


async def test_a_member_cannot_flood_the_origins_log_with_filings_under_fresh_request_ids(regions: Regions) -> None:
    """The origin holds every member to one open case per filer, record and kind, as a filing node its callers."""
    record = penalty(59)
    await publish(regions.jiangsu, [record], regions.shanghai)
    key = regions.shanghai.ledger.key
    first = filing(record.record_id, record.subject.uscc, "310000", "flood-a")
    assert (await deliver(regions, regions.jiangsu, "310000", sealed(key, "310000", first))).created
    second = filing(record.record_id, record.subject.uscc, "310000", "flood-b")
    again = await refused(deliver(regions, regions.jiangsu, "310000", sealed(key, "310000", second)))
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS and first.case_id in (again.details() or "")
    nameless = filing(record.record_id, record.subject.uscc, "310000", "flood-c")
    nameless.filer, nameless.case_id = "", case_id_of("310000", "", "flood-c")
    nameless.content_digest = content_digest(nameless)
    unnamed = await refused(deliver(regions, regions.jiangsu, "310000", sealed(key, "310000", nameless)))
    assert unnamed.code() == grpc.StatusCode.INVALID_ARGUMENT and "filer" in (unnamed.details() or "")
    assert await cases_held(regions.jiangsu) == 1
    assert regions.jiangsu.pool is not None
    async with regions.jiangsu.pool.acquire() as conn:
        disputes = await conn.fetchval(
            "SELECT count(*) FROM events WHERE record_id = $1 AND event_type = $2",
            record.record_id,
            event_pb2.EVENT_TYPE_DISPUTE,
        )
    assert disputes == 1


async def test_an_origin_that_does_not_answer_does_not_hold_up_delivery_to_the_others(regions: Regions) -> None:
    """Each round gives every target its turn: a backlog for a dead origin, always due, never fills the round."""
    record = penalty(62)
    await publish(regions.jiangsu, [record], regions.shanghai)
    await regions.federation.stop_node("330000")
    assert regions.shanghai.pool is not None
    backlog = messages.seal_message(
        regions.shanghai.ledger.key, messages.message_at("310000", case_pb2.CaseStatus(case_id="case-backlog"))
    )
    async with regions.shanghai.pool.acquire() as conn:
        # A backlog larger than a round, kept due however often it is tried (as a big one is, in effect).
        await conn.execute(
            "CREATE FUNCTION keep_due() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN NEW.next_attempt_at := now() - interval '1 second'; RETURN NEW; END $$"
        )
        await conn.execute(
            "CREATE TRIGGER keep_due BEFORE UPDATE ON case_outbox FOR EACH ROW"
            " WHEN (NEW.target = '330000') EXECUTE FUNCTION keep_due()"
        )
        await conn.executemany(
            "INSERT INTO case_outbox (case_id, purpose, target, envelope) VALUES ($1, 'receipt', '330000', $2)",
            [(f"case-backlog-{n}", backlog) for n in range(120)],
        )
    filed = await regions.filer().FileObjection(objection(record, "behind-a-backlog"), timeout=30)
    await arrived(regions, filed.case.case_id)


async def test_a_message_the_courier_cannot_even_read_is_put_off_alone_and_the_rest_is_delivered(
    regions: Regions,
) -> None:
    """A row that breaks in an unforeseen way (here: bytes that are no envelope) fails by itself, not the round."""
    record = penalty(63)
    await publish(regions.jiangsu, [record], regions.shanghai)
    assert regions.shanghai.pool is not None
    async with regions.shanghai.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO case_outbox (case_id, purpose, target, envelope)"
            " VALUES ('case-broken', 'status', '320000', $1)",
            b"\xff\xff not an envelope",
        )
    filed = await regions.filer().FileObjection(objection(record, "beside-a-broken-row"), timeout=30)
    await arrived(regions, filed.case.case_id)

    async def put_off() -> bool:
        async with regions.shanghai.pool.acquire() as conn:  # type: ignore[union-attr]
            error = await conn.fetchval("SELECT last_error FROM case_outbox WHERE case_id = 'case-broken'")
        return bool(error)

    await eventually(put_off, timeout=60)


async def test_the_look_for_a_peers_repairs_reads_only_repairs_not_every_event_of_its_log(
    federation: TestFederation,
) -> None:
    """After a catch-up of millions of events, the courier's look for REPAIRs to confirm stays a few pages."""
    node = await federation.start_node("310000")
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        # The plan a prepared statement keeps once PostgreSQL settles on a generic one: no parameter values in it.
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute("PREPARE repairs_since (text, bigint, bigint) AS " + REPAIRS_SINCE)
        try:
            rows = await conn.fetch("EXPLAIN EXECUTE repairs_since ('320000', 0, 10000000)")
            plan = "\n".join(row[0] for row in rows)
        finally:
            await conn.execute("DEALLOCATE repairs_since")
    assert "events_repairs" in plan, plan
