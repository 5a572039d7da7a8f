"""Callers of a node's gRPC services, each with a certificate of its own, and a node serving sample data.

Shared by the tests of the node's edge: validation, audit, overload, fuzzing.
A caller's role comes from its certificate's name exactly as in production:
``government-office`` is government (the federation's configs say so), a
member's own node certificate is that peer, and any other name is public.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from credex.adapters.profile import Profile
from credex.adapters.samples import synth
from credex.crypto.tls import CertificateAuthority
from credex.node.channels import open_channel
from credex.node.demo.federation import GOVERNMENT_CLIENT
from credex.node.runtime import Node

from .conftest import TestFederation

NATIONAL = Profile.load("national")
GOVERNMENT = GOVERNMENT_CLIENT
PUBLIC = "public-portal"


async def serve_sample(
    federation: TestFederation, tmp_path: Path, *, rows: int = 60, **settings: object
) -> tuple[Node, synth.SynthSummary]:
    """Node 310000 holding ``rows`` sample records (half shared with government), started with ``settings``."""
    node = await federation.start_node("310000", **settings)
    path = tmp_path / "sample.csv"
    summary = synth.write(path, synth.SynthSpec(region="310000", rows=rows, bad_share=0.0, shared_share=0.5))
    await node.ingest([path], NATIONAL)
    return node, summary


def client_channel(
    federation: TestFederation, node: Node, name: str = GOVERNMENT, options: tuple[tuple[str, Any], ...] = ()
) -> grpc.aio.Channel:
    """A channel with a client certificate named ``name``, issued by the federation CA on first use."""
    ca_dir = federation.layout.ca_dir
    if not (ca_dir / f"{name}.crt").exists():
        CertificateAuthority.load(ca_dir).issue(name, []).write(ca_dir, name)
    ca, cert, key = federation.layout.client_tls(name)
    return open_channel(f"127.0.0.1:{node.port}", ca=ca, cert=cert, key=key, options=options)


def government_channel(federation: TestFederation, node: Node) -> grpc.aio.Channel:
    return client_channel(federation, node, GOVERNMENT)


def peer_channel(
    federation: TestFederation, node: Node, origin: str, options: tuple[tuple[str, Any], ...] = ()
) -> grpc.aio.Channel:
    """A channel with member ``origin``'s own node certificate: a federation peer."""
    tls = federation.layout.member_dir(origin) / "tls"
    ca = federation.layout.ca_dir / "ca.crt"
    return open_channel(f"127.0.0.1:{node.port}", ca=ca, cert=tls / "node.crt", key=tls / "node.key", options=options)


def member_server(federation: TestFederation, origin: str) -> grpc.aio.Server:
    """A gRPC server (not started) at member ``origin``'s endpoint with its certificate: a stand-in for its node."""
    tls = federation.layout.member_dir(origin) / "tls"
    server = grpc.aio.server()
    member = federation.bundle_now().member(origin)
    assert member is not None
    server.add_secure_port(
        member.endpoint,
        grpc.ssl_server_credentials(
            [((tls / "node.key").read_bytes(), (tls / "node.crt").read_bytes())],
            root_certificates=(federation.layout.ca_dir / "ca.crt").read_bytes(),
            require_client_auth=True,
        ),
    )
    return server


async def audit_rows(node: Node, method: str | None = None) -> list[asyncpg.Record]:
    """The node's audit trail in order, of one method or all; ``calls``: how many calls a row stands for."""
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        return list(
            await conn.fetch(
                "SELECT caller, role, method, subject_id, purpose, answered, status, detail, calls FROM audit_log"
                " WHERE $1::text IS NULL OR method = $1 ORDER BY id",
                method,
            )
        )


async def calls_audited(node: Node, method: str, expected: Counter[tuple[str, str]]) -> list[asyncpg.Record] | None:
    """The audit rows of ``method`` once the calls they stand for, by caller and status, are ``expected``
    (refusals beyond a few a second are summed up in one row, written after their second)."""
    rows = await audit_rows(node, method)
    audited: Counter[tuple[str, str]] = Counter()
    for row in rows:
        audited[(row["caller"], row["status"])] += row["calls"]
    return rows if audited == expected else None
