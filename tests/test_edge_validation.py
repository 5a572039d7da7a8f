"""Every field of every gRPC request is checked at the edge before any work, with a short, clear refusal.

Regression tests of issue 7's probes: a NUL in a text field or a seq of 2^63 used to
reach the database driver (UNKNOWN with its error class), bytes that are not a
request gave UNKNOWN "DecodeError", a 3 MB uscc of U+FDFA expanded 18-fold in
normalization and came back whole in the error, and whitespace-padded codes
filled caches keyed by caller input.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from credex.domain import normalize
from credex.domain import uscc as uscc_codes
from credex.node.runtime import Node
from credex.node.services import edge
from credex.node.services.access import Caller
from credex.v1 import exchange_pb2, log_pb2, lookup_pb2, quality_pb2

from .callers import audit_rows, government_channel, peer_channel, serve_sample
from .conftest import TestFederation

SHORT = 200  # an error message never repeats more than a few characters of the input
LOOKUP, LOG, EXCHANGE, QUALITY = (
    "/credex.v1.LookupService/",
    "/credex.v1.LogService/",
    "/credex.v1.ExchangeService/",
    "/credex.v1.QualityService/",
)


async def call_raw(channel: grpc.aio.Channel, path: str, payload: bytes) -> tuple[grpc.StatusCode, str]:
    """Send ``payload`` as the request bytes of ``path``; the status and details answered."""
    try:
        await channel.unary_unary(path, None, None)(payload, timeout=30)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def refusal(channel: grpc.aio.Channel, path: str, request: Message) -> tuple[grpc.StatusCode, str]:
    return await call_raw(channel, path, request.SerializeToString())


HOSTILE_TEXT = [
    (LOOKUP + "GetProfile", lookup_pb2.GetProfileRequest(uscc="91310000\x00", purpose="ok"), "uscc", "U+0000"),
    (LOOKUP + "GetProfile", lookup_pb2.GetProfileRequest(uscc="x", purpose="a\x00b"), "purpose", "U+0000"),
    (LOOKUP + "GetProfile", lookup_pb2.GetProfileRequest(uscc="x", purpose="\u202egnp.exe"), "purpose", "U+202E"),
    (LOOKUP + "GetRecord", lookup_pb2.GetRecordRequest(record_id="310000-\x00", purpose="ok"), "record_id", "U+0000"),
    (
        LOG + "GetInclusionProof",
        log_pb2.GetInclusionProofRequest(origin="310000", record_id="\x1b[2J"),
        "record_id",
        "",
    ),
    (LOG + "GetCheckpoint", log_pb2.GetCheckpointRequest(origin="31\x000000"), "origin", "U+0000"),
    (EXCHANGE + "FetchEvents", exchange_pb2.FetchEventsRequest(origin="990000"), "origin", "GB/T 2260"),
    (EXCHANGE + "FetchEvents", exchange_pb2.FetchEventsRequest(origin=""), "origin", "GB/T 2260"),
    (QUALITY + "GetQualityReport", quality_pb2.GetQualityReportRequest(unit_uscc="\x07"), "unit_uscc", "U+0007"),
]


async def test_text_with_control_characters_or_a_malformed_origin_is_invalid_argument_naming_the_field(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, _ = await serve_sample(federation, tmp_path, rows=10)
    async with peer_channel(federation, node, "320000") as channel:
        for path, request, field, says in HOSTILE_TEXT:
            code, details = await refusal(channel, path, request)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, details)
            assert details.startswith(field) and says in details and len(details) < SHORT, details
    rows = await audit_rows(node)
    assert [r["status"] for r in rows] == ["INVALID_ARGUMENT"] * len(HOSTILE_TEXT)
    assert all("\x00" not in r["subject_id"] + r["purpose"] for r in rows)


async def test_integers_beyond_a_bigint_are_invalid_argument_and_never_reach_the_database(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, _ = await serve_sample(federation, tmp_path, rows=10)
    huge = [
        (LOG + "GetInclusionProof", log_pb2.GetInclusionProofRequest(origin="310000", seq=2**63)),
        (LOG + "GetInclusionProof", log_pb2.GetInclusionProofRequest(origin="310000", seq=1, tree_size=2**64 - 1)),
        (LOG + "GetConsistencyProof", log_pb2.GetConsistencyProofRequest(origin="310000", old_size=2**63)),
        (EXCHANGE + "FetchEvents", exchange_pb2.FetchEventsRequest(origin="310000", from_seq=2**63, limit=1)),
    ]
    async with peer_channel(federation, node, "320000") as channel:
        for path, request in huge:
            code, details = await refusal(channel, path, request)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, details)
            assert "between 0 and 2^63-1" in details
        largest = log_pb2.GetInclusionProofRequest(origin="310000", seq=2**63 - 1)
        code, details = await refusal(channel, LOG + "GetInclusionProof", largest)
        assert code == grpc.StatusCode.NOT_FOUND, details  # the largest bigint is a fine question with no answer


async def test_bytes_that_are_not_a_request_are_invalid_argument_not_a_decode_error(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, _ = await serve_sample(federation, tmp_path, rows=10)
    async with government_channel(federation, node) as channel:
        for payload in (b"\xff\xff\xff\xff", b"\x0a\x02\xff\xfe", b"\x0a\x7f"):  # junk, bad UTF-8, truncated
            code, details = await call_raw(channel, LOOKUP + "GetProfile", payload)
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid credex.v1.GetProfileRequest" in details


async def test_a_3_mb_uscc_of_u_fdfa_is_refused_by_its_size_with_a_short_message(
    federation: TestFederation, tmp_path: Path
) -> None:
    node, summary = await serve_sample(federation, tmp_path, rows=10)
    async with government_channel(federation, node) as channel:
        whole = lookup_pb2.GetProfileRequest(uscc="\ufdfa" * 1_000_000, purpose="probe")  # 3 MB on the wire
        code, details = await refusal(channel, LOOKUP + "GetProfile", whole)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < SHORT, details[:SHORT]
        assert "bytes" in details
        under_the_request_limit = lookup_pb2.GetProfileRequest(uscc="\ufdfa" * 1000, purpose="probe")
        code, details = await refusal(channel, LOOKUP + "GetProfile", under_the_request_limit)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < SHORT, details[:SHORT]
        assert details.startswith("uscc has 1,000 characters")
        subject = sorted(summary.shared_subjects)[0]
        code, _ = await refusal(channel, LOOKUP + "GetProfile", lookup_pb2.GetProfileRequest(uscc=subject, purpose="x"))
        assert code == grpc.StatusCode.OK
    assert [r["status"] for r in await audit_rows(node)] == ["INVALID_ARGUMENT", "INVALID_ARGUMENT", "OK"]


def test_uscc_validation_refuses_long_input_before_normalizing_it() -> None:
    with pytest.raises(uscc_codes.InvalidSubjectCode) as raised:
        uscc_codes.validate("\ufdfa" * 1_000_000)
    assert raised.value.reason == "uscc.length" and len(raised.value.message) < SHORT
    with pytest.raises(uscc_codes.InvalidSubjectCode) as raised:
        uscc_codes.validate("\ufdfa" * 60)  # short enough to normalize: 1,080 characters after NFKC
    assert len(raised.value.message) < SHORT


async def test_many_distinct_padded_codes_grow_no_cache(federation: TestFederation, tmp_path: Path) -> None:
    node, summary = await serve_sample(federation, tmp_path, rows=10)
    subject = sorted(summary.shared_subjects)[0]
    assert not hasattr(uscc_codes.validate, "cache_info")  # what callers reach keeps nothing
    before = (normalize.memo_sizes(), uscc_codes.memo_size())
    padded = [" " * left + subject + "\u3000" * right for left in range(20) for right in range(20)]
    async with government_channel(federation, node) as channel:
        for uscc in padded:
            request = lookup_pb2.GetProfileRequest(uscc=uscc, purpose="padding probe")
            code, details = await refusal(channel, LOOKUP + "GetProfile", request)
            assert code == grpc.StatusCode.OK, details
    assert (normalize.memo_sizes(), uscc_codes.memo_size()) == before
    assert {r["subject_id"] for r in await audit_rows(node)} == {subject}


def test_ingest_caches_keep_only_short_inputs() -> None:
    before = normalize.memo_sizes()["clean_text"]
    for n in range(200):
        normalize.clean_text("长" * (normalize.MEMO_KEY_CHARS + 1 + n))
    assert normalize.memo_sizes()["clean_text"] == before


async def test_a_node_without_tls_is_validated_the_same(federation: TestFederation, tmp_path: Path) -> None:
    """Anonymous callers (no TLS, loopback only) pass the same edge."""
    node: Node = await federation.start_node(
        "310000", grpc={"tls": {"cert": None, "key": None, "client_ca": None}}, access={"anonymous_role": "public"}
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        code, _ = await refusal(channel, LOOKUP + "GetRecord", lookup_pb2.GetRecordRequest(record_id="a\x00"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_code_validated_once_in_a_call_is_never_lent_to_another_text() -> None:
    """The edge validates an all-digit subject before auditing it and the service asks the call again: the
    second answer is the first only for the very same text; any other text is validated on its own."""
    call = edge.Call("GetProfile", Caller("office", "government"))
    code = uscc_codes.make("91", "310115", "00000001")  # all digits but the last: shaped like an ID number
    assert call.uscc(code) == code
    assert call.uscc(code) == code
    assert call.uscc(f" {code[:9]} {code[9:]} ") == code  # spaced: validated itself, same canonical code
    wrong = code[:-1] + ("0" if code[-1] != "0" else "1")
    with pytest.raises(uscc_codes.InvalidSubjectCode):
        call.uscc(wrong)
    with pytest.raises(uscc_codes.InvalidSubjectCode):
        edge.Call("GetProfile", Caller("office", "government")).uscc(wrong)
