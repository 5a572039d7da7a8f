"""Authorizations are signed records: one source of truth that every node reads the same way.

An operator's ``GrantAuthorization`` signs a ``KIND_AUTHORIZATION`` record into its node's
log and ``EndAuthorization`` its REVOKE; the records reach every region by the normal path,
and checks, reports and streams on any node ask the records held (node/authorizations).
Grants a node kept in its own table before migration 0025 are signed at its next start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
from pathlib import Path

import grpc
import pytest
from stdnum.cn import ric
from typer.testing import CliRunner

from credex.domain import uscc as uscc_codes
from credex.domain.publicity import publicity_today
from credex.node.authorizations import held, terms
from credex.node.authorizations.terms import STREAM_SCOPE
from credex.node.cli import app
from credex.node.runtime import Node
from credex.v1 import authorization_pb2, lookup_pb2, record_pb2, subscription_pb2, subscription_pb2_grpc

from .callers import audit_rows, client_channel
from .conftest import TestFederation, eventually

SH, JS = "310000", "320000"
OPERATOR = "operator-desk"
UNIT = uscc_codes.make("91", "310000", "XYD00001")  # the financing platform: the grantee
COMPANY = uscc_codes.make("91", "320500", "JT000011")
SETTINGS = {"access": {"callers": {OPERATOR: "operator"}}}
NUMBER = "11010519491231002" + ric.calc_check_digit("11010519491231002" + "0")


def authorization(authorization_id: str, subject: str, scope: str = STREAM_SCOPE) -> authorization_pb2.Authorization:
    return authorization_pb2.Authorization(
        authorization_id=authorization_id,
        subject=subject,
        grantee=UNIT,
        scope=scope,
        valid_from=publicity_today().isoformat(),
        valid_until=(publicity_today() + dt.timedelta(days=365)).isoformat(),
        document_sha256=hashlib.sha256(authorization_id.encode()).digest(),
    )


async def authorized(node: Node, subject: str, scope: str = STREAM_SCOPE) -> bool:
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return subject in await held.authorized(conn, UNIT, [subject], scope, publicity_today())


async def grant(federation: TestFederation, node: Node, given: authorization_pb2.Authorization) -> object:
    async with client_channel(federation, node, OPERATOR) as channel:
        return await subscription_pb2_grpc.SubscriptionServiceStub(channel).GrantAuthorization(
            subscription_pb2.GrantAuthorizationRequest(authorization=given)
        )


async def end(federation: TestFederation, node: Node, authorization_id: str) -> subscription_pb2.AuthorizationReceipt:
    async with client_channel(federation, node, OPERATOR) as channel:
        answer: subscription_pb2.AuthorizationReceipt = await subscription_pb2_grpc.SubscriptionServiceStub(
            channel
        ).EndAuthorization(
            subscription_pb2.EndAuthorizationRequest(authorization_id=authorization_id, grantee=UNIT, reason="授权撤回")
        )
        return answer


async def test_an_authorization_granted_at_one_node_is_honoured_by_every_node_and_ended_everywhere(
    federation: TestFederation,
) -> None:
    shanghai = await federation.start_node(SH, **SETTINGS)
    jiangsu = await federation.start_node(JS, **SETTINGS)
    receipt = await grant(federation, shanghai, authorization("XYD-1", COMPANY, scope="stream,report"))
    assert isinstance(receipt, subscription_pb2.AuthorizationReceipt) and receipt.active
    assert receipt.record_id.startswith(f"{SH}-")
    assert await authorized(shanghai, COMPANY) and await authorized(shanghai, COMPANY, "report")
    await eventually(lambda: authorized(jiangsu, COMPANY))  # taken in from Shanghai's log, as any record
    assert not await authorized(jiangsu, COMPANY, "政府采购")  # only the scopes it lists
    with pytest.raises(grpc.aio.AioRpcError) as elsewhere:  # only its origin ends it
        await end(federation, jiangsu, "XYD-1")
    assert elsewhere.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ended there" in (elsewhere.value.details() or "")
    ended = await end(federation, shanghai, "XYD-1")
    assert not ended.active and ended.record_id == receipt.record_id
    assert not await authorized(shanghai, COMPANY)

    async def gone_at_jiangsu() -> bool:
        return not await authorized(jiangsu, COMPANY)

    await eventually(gone_at_jiangsu)
    assert jiangsu.pool is not None
    async with jiangsu.pool.acquire() as conn:
        status = await conn.fetchval("SELECT status FROM records WHERE record_id = $1", receipt.record_id)
    assert status == lookup_pb2.ENTRY_STATUS_REVOKED
    again = await grant(federation, shanghai, authorization("XYD-1", COMPANY, scope="stream,report"))
    assert isinstance(again, subscription_pb2.AuthorizationReceipt) and not again.active  # ended stays ended


async def test_a_person_named_by_id_number_is_recorded_under_the_pseudonym_and_the_number_is_kept_nowhere(
    federation: TestFederation,
) -> None:
    shanghai = await federation.start_node(SH, **SETTINGS)
    assert shanghai.pseudonymizer is not None and shanghai.pool is not None
    pseudonym = shanghai.pseudonymizer.pseudonym(NUMBER)
    receipt = await grant(federation, shanghai, authorization("XYD-P", NUMBER, scope="report"))
    assert isinstance(receipt, subscription_pb2.AuthorizationReceipt) and receipt.subject_id == pseudonym
    assert await authorized(shanghai, pseudonym, "report")
    async with shanghai.pool.acquire() as conn:
        record = record_pb2.Record.FromString(
            bytes(await conn.fetchval("SELECT record FROM records WHERE record_id = $1", receipt.record_id))
        )
        envelopes = b"".join(bytes(r["envelope"]) for r in await conn.fetch("SELECT envelope FROM events"))
    assert record.subject.person_pseudonym == pseudonym
    assert record.subject.type == record_pb2.SUBJECT_TYPE_NATURAL_PERSON
    assert record.sharing_level == record_pb2.SHARING_LEVEL_RESTRICTED
    assert NUMBER.encode() not in record.SerializeToString() and NUMBER.encode() not in envelopes
    rows = await audit_rows(shanghai, "GrantAuthorization")
    assert [r["subject_id"] for r in rows] == [pseudonym]
    assert all(NUMBER not in str(dict(r)) for r in rows)


async def test_grants_kept_before_authorizations_were_records_are_signed_at_the_next_start_and_none_is_lost(
    federation: TestFederation,
) -> None:
    shanghai = await federation.start_node(SH, **SETTINGS)
    assert shanghai.pool is not None
    kept = [("OLD-1", uscc_codes.make("91", "310000", "JT000012"), None), ("OLD-2", COMPANY, "授权撤回")]
    async with shanghai.pool.acquire() as conn:
        for authorization_id, subject, ended in kept:  # as 0017's table held them, written by the old node
            await conn.execute(
                "INSERT INTO authorizations_before_records (grantee, authorization_id, subject_id, scope, valid_from,"
                " valid_until, document_sha256, granted_by, ended_at, ended_by, end_reason)"
                " VALUES ($1, $2, $3, 'stream', $4, $5, $6, 'operator-desk', $7, $8, $9)",
                UNIT,
                authorization_id,
                subject,
                publicity_today(),
                publicity_today() + dt.timedelta(days=30),
                hashlib.sha256(authorization_id.encode()).digest(),
                None if ended is None else dt.datetime.now(dt.UTC),
                None if ended is None else "operator-desk",
                ended,
            )
    await federation.stop_node(SH)
    shanghai = await federation.start_node(SH, **SETTINGS)
    assert shanghai.pool is not None
    assert await authorized(shanghai, kept[0][1]) and not await authorized(shanghai, COMPANY)
    async with shanghai.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT a.authorization_id, r.status FROM authorizations_before_records a"
            " JOIN records r USING (record_id) ORDER BY a.authorization_id"
        )
        events = await conn.fetchval("SELECT count(*) FROM events WHERE origin = $1", SH)
    assert [(r["authorization_id"], r["status"]) for r in rows] == [
        ("OLD-1", lookup_pb2.ENTRY_STATUS_ACTIVE),
        ("OLD-2", lookup_pb2.ENTRY_STATUS_REVOKED),
    ]
    assert events == 3  # two records and one REVOKE
    await federation.stop_node(SH)
    shanghai = await federation.start_node(SH, **SETTINGS)  # signed once: a later start signs nothing again
    assert shanghai.pool is not None
    async with shanghai.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events WHERE origin = $1", SH) == events
    receipt = await end(federation, shanghai, "OLD-1")  # an adopted grant ends as any other
    assert not receipt.active and not await authorized(shanghai, kept[0][1])


async def test_credex_authorization_grant_and_end_sign_and_revoke_the_record(
    federation: TestFederation, tmp_path: Path
) -> None:
    shanghai = await federation.start_node(SH, **SETTINGS)
    async with client_channel(federation, shanghai, OPERATOR):
        pass  # issues the operator's certificate
    ca, cert, key = federation.layout.client_tls(OPERATOR)
    tls = ["--node", f"127.0.0.1:{shanghai.port}", "--ca", str(ca), "--cert", str(cert), "--key", str(key)]
    document = tmp_path / "授权书.pdf"
    document.write_bytes(b"the signed authorization document the platform keeps")
    runner = CliRunner()
    granted = await asyncio.to_thread(
        runner.invoke,
        app,
        ["authorization", "grant", "XYD-CLI", "--subject", COMPANY, "--grantee", UNIT, "--document", str(document),
         "--valid-until", (publicity_today() + dt.timedelta(days=90)).isoformat(), "--scope", "report,stream", *tls],
    )  # fmt: skip
    assert granted.exit_code == 0, granted.output
    assert "in force" in granted.output and f"{SH}-" in granted.output
    assert await authorized(shanghai, COMPANY, "report") and await authorized(shanghai, COMPANY)
    ended = await asyncio.to_thread(
        runner.invoke, app, ["authorization", "end", "XYD-CLI", "--grantee", UNIT, "--reason", "授权撤回", *tls]
    )
    assert ended.exit_code == 0 and "revoked in every region" in ended.output, ended.output
    assert not await authorized(shanghai, COMPANY, "report")
    refused = await asyncio.to_thread(
        runner.invoke,
        app,
        ["authorization", "grant", "XYD-BAD", "--subject", COMPANY, "--grantee", UNIT, "--document", str(document),
         "--valid-until", "2099-12-31", "--scope", "report, stream", *tls],
    )  # fmt: skip
    assert refused.exit_code != 0 and "scope" in refused.output, refused.output


async def test_a_persons_authorization_recorded_at_one_node_is_honoured_in_a_check_at_another(
    federation: TestFederation,
) -> None:
    """A person's records never cross the bus; their authorization reaches peers as they do, by sync."""
    shanghai = await federation.start_node(SH, **SETTINGS)
    jiangsu = await federation.start_node(JS, **SETTINGS)
    given = authorization("XYD-PJ", NUMBER, scope="政府采购")
    receipt = await grant(federation, shanghai, given)
    assert isinstance(receipt, subscription_pb2.AuthorizationReceipt)
    presented = terms.of(given, jiangsu.pseudonymizer)  # as Jiangsu's check turns the number into the pseudonym
    assert presented.subject_id == receipt.subject_id
    forged = dataclasses.replace(presented, document_sha256=bytes(32))
    assert jiangsu.pool is not None

    async def honoured(shown: terms.Terms) -> bool:
        assert jiangsu.pool is not None
        async with jiangsu.pool.acquire() as conn:
            return await held.honoured(conn, shown, UNIT, "政府采购", publicity_today())

    await eventually(lambda: honoured(presented))
    assert not await honoured(forged)


async def test_an_authorization_id_or_end_reason_holding_an_id_number_is_never_signed_or_audited(
    federation: TestFederation,
) -> None:
    """An authorization's id and an end's reason are signed into records every region holds: no ID number in them."""
    shanghai = await federation.start_node(SH, **SETTINGS)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await grant(federation, shanghai, authorization(f"授权-{NUMBER}", COMPANY))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "authorization_id" in str(refused.value.details()) and NUMBER not in str(refused.value.details())
    await grant(federation, shanghai, authorization("XYD-REASON", COMPANY))
    async with client_channel(federation, shanghai, OPERATOR) as channel:
        await subscription_pb2_grpc.SubscriptionServiceStub(channel).EndAuthorization(
            subscription_pb2.EndAuthorizationRequest(
                authorization_id="XYD-REASON", grantee=UNIT, reason=f"申请人 {NUMBER} 撤回"
            )
        )
    assert shanghai.pool is not None
    async with shanghai.pool.acquire() as conn:
        signed = await conn.fetch("SELECT envelope FROM events UNION ALL SELECT record FROM records")
    kept = [bytes(row[0]) for row in signed]
    assert len(kept) == 3 and not any(NUMBER.encode() in held for held in kept)  # grant, end, the record
    rows = await audit_rows(shanghai)
    assert rows and all(NUMBER not in " ".join(str(value) for value in row.values()) for row in rows), rows


async def test_an_operator_whose_certificate_is_named_by_an_id_number_signs_grants_without_it(
    federation: TestFederation,
) -> None:
    """``granted_by`` is signed into the record every region holds: the operator's name goes there withheld."""
    desk = f"desk-{NUMBER}"
    shanghai = await federation.start_node(SH, access={"callers": {desk: "operator"}})
    async with client_channel(federation, shanghai, desk) as channel:
        receipt = await subscription_pb2_grpc.SubscriptionServiceStub(channel).GrantAuthorization(
            subscription_pb2.GrantAuthorizationRequest(authorization=authorization("XYD-DESK", COMPANY))
        )
    assert shanghai.pool is not None
    async with shanghai.pool.acquire() as conn:
        record = record_pb2.Record.FromString(
            bytes(await conn.fetchval("SELECT record FROM records WHERE record_id = $1", receipt.record_id))
        )
        envelopes = [bytes(r["envelope"]) for r in await conn.fetch("SELECT envelope FROM events")]
    assert record.authorization.granted_by == "desk-[证件号码已隐去 ID number withheld]"
    assert envelopes and not any(NUMBER.encode() in envelope for envelope in envelopes)
