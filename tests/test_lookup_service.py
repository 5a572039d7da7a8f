"""The gRPC services: lookups with clear errors, roles, an audit trail, standard health and reflection."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from credex.adapters.samples import synth
from credex.domain import uscc as uscc_codes
from credex.node.channels import open_channel
from credex.node.runtime import Node
from credex.v1 import event_pb2, exchange_pb2, exchange_pb2_grpc, lookup_pb2, lookup_pb2_grpc

from .callers import calls_audited, government_channel, peer_channel, serve_sample
from .conftest import TestFederation, eventually


@pytest.fixture
async def served(federation: TestFederation, tmp_path: Path) -> AsyncIterator[tuple[Node, synth.SynthSummary]]:
    yield await serve_sample(federation, tmp_path)


@pytest.mark.parametrize(
    ("uscc", "says"),
    [
        ("12345", "must have 18 characters"),
        ("310000400000001", "工商注册号"),
        ("91110000600037341X", "position 18 should be 'L'"),
        ("91310000600O37341L", "letter O"),
        ("", "empty"),
    ],
)
async def test_a_malformed_uscc_is_invalid_argument_saying_what_is_wrong(
    federation: TestFederation, served: tuple[Node, synth.SynthSummary], uscc: str, says: str
) -> None:
    node, _ = served
    async with government_channel(federation, node) as channel:
        stub = lookup_pb2_grpc.LookupServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetProfile(lookup_pb2.GetProfileRequest(uscc=uscc, purpose="资格审查"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in (raised.value.details() or "")


async def test_an_unknown_but_valid_uscc_gives_an_empty_profile(
    federation: TestFederation, served: tuple[Node, synth.SynthSummary]
) -> None:
    node, _ = served
    unknown = uscc_codes.make("91", "310105", "ABCD1234")
    async with government_channel(federation, node) as channel:
        profile = await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(
            lookup_pb2.GetProfileRequest(uscc=unknown, purpose="资格审查")
        )
    assert profile.subject_id == unknown
    assert list(profile.entries) == []


async def test_every_lookup_is_in_the_audit_log_with_caller_role_and_purpose(
    federation: TestFederation, served: tuple[Node, synth.SynthSummary]
) -> None:
    node, summary = served
    subject = sorted(summary.shared_subjects)[0]
    async with government_channel(federation, node) as channel:
        stub = lookup_pb2_grpc.LookupServiceStub(channel)
        profile = await stub.GetProfile(lookup_pb2.GetProfileRequest(uscc=subject, purpose="政府采购 供应商审查"))
        record_id = profile.entries[0].record.record_id
        await stub.GetRecord(lookup_pb2.GetRecordRequest(record_id=record_id, purpose="复核"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.GetProfile(lookup_pb2.GetProfileRequest(uscc="bad"))
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT caller, role, method, subject_id, purpose, answered, status FROM audit_log ORDER BY id"
        )
    assert [(r["caller"], r["role"], r["method"], r["subject_id"], r["purpose"], r["status"]) for r in rows] == [
        ("government-office", "government", "GetProfile", subject, "政府采购 供应商审查", "OK"),
        ("government-office", "government", "GetRecord", subject, "复核", "OK"),
        ("government-office", "government", "GetProfile", "bad", "", "INVALID_ARGUMENT"),
    ]
    assert rows[0]["answered"] == len(profile.entries)


async def test_bad_requests_get_clear_status_codes(
    federation: TestFederation, served: tuple[Node, synth.SynthSummary]
) -> None:
    node, summary = served
    subject = sorted(summary.shared_subjects)[0]
    async with government_channel(federation, node) as channel:
        stub = lookup_pb2_grpc.LookupServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetProfile(lookup_pb2.GetProfileRequest(uscc=subject, purpose="x" * 501))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        for record_id, code in [("", grpc.StatusCode.INVALID_ARGUMENT), ("310000-CF-none", grpc.StatusCode.NOT_FOUND)]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetRecord(lookup_pb2.GetRecordRequest(record_id=record_id, purpose="复核"))
            assert raised.value.code() == code


async def test_only_federation_peers_may_fetch_logs(
    federation: TestFederation, served: tuple[Node, synth.SynthSummary]
) -> None:
    node, sample = served
    request = exchange_pb2.FetchEventsRequest(origin="310000", from_seq=1, limit=10)
    async with government_channel(federation, node) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await exchange_pb2_grpc.ExchangeServiceStub(channel).FetchEvents(request)
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    async with peer_channel(federation, node, "320000") as channel:
        stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
        response = await stub.FetchEvents(request)
        assert len(response.envelopes) == 10
        assert response.head_seq == sample.rows - sample.bad  # one event per accepted row
        for origin, code in [("340000", grpc.StatusCode.NOT_FOUND), ("990000", grpc.StatusCode.INVALID_ARGUMENT)]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.FetchEvents(exchange_pb2.FetchEventsRequest(origin=origin, from_seq=1, limit=1))
            assert raised.value.code() == code  # not a member / not a division code at all


async def test_a_peer_fetches_exactly_the_seqs_it_names_and_a_malformed_list_changes_nothing(
    federation: TestFederation, served: tuple[Node, synth.SynthSummary]
) -> None:
    """Scattered seqs (events withheld from the bus) come in one call; the trail names them in stretches."""
    node, _ = served
    async with peer_channel(federation, node, "320000") as channel:
        stub = exchange_pb2_grpc.ExchangeServiceStub(channel)
        response = await stub.FetchEvents(exchange_pb2.FetchEventsRequest(origin="310000", seqs=[2, 5, 6, 7, 10**6]))
        assert [event_pb2.Event.FromString(e.payload).seq for e in response.envelopes] == [2, 5, 6, 7]
        assert response.head_seq >= 7  # 10**6 is past the head: left out, not an error
        malformed = [
            ([5, 2], "strictly ascending"),
            ([2, 2], "strictly ascending"),
            ([0, 1], "strictly ascending"),
            ([2**63], "between 0 and 2^63-1"),
            (list(range(1, 5002)), "at most 5,000"),
        ]
        for seqs, says in malformed:
            request = exchange_pb2.FetchEventsRequest(origin="310000", seqs=seqs)
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.FetchEvents(request)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, seqs
            assert says in (raised.value.details() or ""), raised.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.FetchEvents(exchange_pb2.FetchEventsRequest(origin="310000", from_seq=1, limit=2, seqs=[5]))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not both" in (raised.value.details() or "")

    expected = Counter({("320000", "OK"): 1, ("320000", "INVALID_ARGUMENT"): 6})
    rows = await eventually(lambda: calls_audited(node, "FetchEvents", expected))
    answered = [r for r in rows if r["status"] == "OK"]
    assert [(r["answered"], r["detail"]) for r in answered] == [(4, "310000#2 310000#5..7")]


async def test_a_caller_without_a_federation_certificate_cannot_connect(
    federation: TestFederation, served: tuple[Node, synth.SynthSummary]
) -> None:
    node, _ = served
    async with open_channel(f"127.0.0.1:{node.port}", ca=federation.layout.ca_dir / "ca.crt") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(
                lookup_pb2.GetProfileRequest(uscc="91310000600037341L"), timeout=5
            )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_checking_and_reflection_work_with_standard_tools(
    federation: TestFederation, served: tuple[Node, synth.SynthSummary]
) -> None:
    node, _ = served
    async with government_channel(federation, node) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="credex.v1.LookupService")
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = set()
        async for response in stream:
            names |= {s.name for s in response.list_services_response.service}
    assert {"credex.v1.LookupService", "credex.v1.ExchangeService", "grpc.health.v1.Health"} <= names
