"""Shared by the key, trust and peer-identity tests: calling a node as some certificate, fast bundle refresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.crypto.tls import CertificateAuthority
from credex.node import runtime
from credex.node.channels import open_channel
from credex.node.ledger import Change
from credex.node.runtime import Node
from credex.v1 import exchange_pb2, exchange_pb2_grpc, lookup_pb2, lookup_pb2_grpc, record_pb2

from .conftest import TestFederation

NATIONAL = Profile.load("national")
RESTRICTED_USCC = "913100006000373412"


@pytest.fixture
def quick_refresh() -> Iterator[None]:
    """Nodes look for a new bundle file every 0.2 s instead of every 10 s."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runtime, "BUNDLE_REFRESH_SECONDS", 0.2)
        yield


def member_tls(federation: TestFederation, origin: str) -> tuple[Path, Path]:
    tls = federation.layout.member_dir(origin) / "tls"
    return tls / "node.crt", tls / "node.key"


def issue(federation: TestFederation, common_name: str, where: Path) -> tuple[Path, Path]:
    """A fresh certificate under the federation CA: same CA, any name, a new key."""
    return CertificateAuthority.load(federation.layout.ca_dir).issue(common_name, []).write(where, common_name)


def channel_as(federation: TestFederation, node: Node, cert: tuple[Path, Path]) -> grpc.aio.Channel:
    return open_channel(f"127.0.0.1:{node.port}", ca=federation.layout.ca_dir / "ca.crt", cert=cert[0], key=cert[1])


async def fetch_code(federation: TestFederation, node: Node, cert: tuple[Path, Path]) -> grpc.StatusCode:
    """What FetchEvents of the node's own log answers this certificate."""
    request = exchange_pb2.FetchEventsRequest(origin=node.origin, from_seq=1, limit=5)
    async with channel_as(federation, node, cert) as channel:
        try:
            await exchange_pb2_grpc.ExchangeServiceStub(channel).FetchEvents(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def profile_levels(federation: TestFederation, node: Node, cert: tuple[Path, Path], uscc: str) -> set[int]:
    """The sharing levels of the records a profile lookup shows this certificate."""
    async with channel_as(federation, node, cert) as channel:
        profile = await lookup_pb2_grpc.LookupServiceStub(channel).GetProfile(
            lookup_pb2.GetProfileRequest(uscc=uscc, purpose="test"), timeout=10
        )
    return {entry.record.sharing_level for entry in profile.entries}


async def take_in(node: Node, tmp_path: Path, rows: int, first_row: int = 0) -> int:
    path = tmp_path / f"{node.origin}-{first_row}.csv"
    synth.write(path, synth.SynthSpec(region=node.origin, rows=rows, bad_share=0.0, first_row=first_row))
    [report] = await node.ingest([path], NATIONAL)
    return report.new


async def add_restricted_record(node: Node) -> str:
    """A record only peers and operators may see, appended through the node's own ledger."""
    record_id = f"{node.origin}-CF-restricted-1"
    record = record_pb2.Record(
        record_id=record_id,
        origin=node.origin,
        kind=record_pb2.KIND_PENALTY,
        subject=record_pb2.Subject(uscc=RESTRICTED_USCC, name="受限主体有限公司"),
        sharing_level=record_pb2.SHARING_LEVEL_RESTRICTED,
    )
    assert node.pool is not None
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger.append(conn, [Change.of(record)])
    return record_id


async def own_checkpoint(node: Node, size: int) -> int | None:
    held = (await node.status()).checkpoints.get(node.origin)
    return held[0] if held is not None and held[0] >= size else None
