"""Tiles over HTTP: any auditor reproduces a node's checkpoint with httpx and SHA-256, no gRPC and no credex code.

The independent verifier below reads the checkpoint, the hash tiles and the entry
bundles at the C2SP tlog-tiles paths and hashes per RFC 6962 in a few lines of
its own. Full tiles are immutable, partial ones and the checkpoint are not
cached long, entry bundles (they carry records) go to peers only, every answer
is audited, and hostile requests get a clear status or a closed connection
without disturbing anyone else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import math
import ssl
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from credex.crypto.tiles import MAX_ENTRY
from credex.crypto.tls import CertificateAuthority
from credex.node.chain.merkle_book import TileCache
from credex.node.embedded import EmbeddedBroker, EmbeddedPostgres
from credex.node.ledger import Change
from credex.node.ledger.appender import _Clock
from credex.node.runtime import Node
from credex.node.services import refusals
from credex.node.store import tiles
from credex.v1 import event_pb2, lookup_pb2, record_pb2

from .callers import PUBLIC, audit_rows, calls_audited, serve_sample
from .conftest import TestFederation, eventually
from .forgery import FORGED_SUBJECT


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash over leaf hashes, written out again here on purpose (independent)."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    return sha256(b"\x01" + mth(hashes[:k]) + mth(hashes[k:]))


def client(federation: TestFederation, node: Node, name: str) -> httpx.AsyncClient:
    """An HTTPS client with a certificate named ``name`` (a member's own node certificate for a peer)."""
    layout = federation.layout
    context = ssl.create_default_context(cafile=layout.ca_dir / "ca.crt")
    member_tls = layout.member_dir(name) / "tls"
    if (member_tls / "node.crt").exists():
        context.load_cert_chain(member_tls / "node.crt", member_tls / "node.key")
    else:
        if not (layout.ca_dir / f"{name}.crt").exists():
            CertificateAuthority.load(layout.ca_dir).issue(name, []).write(layout.ca_dir, name)
        _, cert, key = layout.client_tls(name)
        context.load_cert_chain(cert, key)
    assert node.tiles is not None
    return httpx.AsyncClient(base_url=f"https://127.0.0.1:{node.tiles.port}", verify=context)


def tile(level: int, index: int, width: int) -> str:
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return f"tile/{level}/{'/'.join(reversed(groups))}" + ("" if width == 256 else f".p/{width}")


async def serving_with_checkpoint(federation: TestFederation, tmp_path: Path, rows: int) -> Node:
    node, _ = await serve_sample(federation, tmp_path, rows=rows)

    async def signed() -> bool:
        held = await node.keeper.latest("310000")
        return held is not None and held.size >= rows

    await eventually(signed)
    return node


async def test_an_independent_verifier_reproduces_the_checkpoint_root_from_the_http_tiles(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await serving_with_checkpoint(federation, tmp_path, rows=300)
    async with client(federation, node, "320000") as http:
        answer = await http.get("/310000/checkpoint")
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-cache"
        note = answer.text
        _, size_line, root_line = note.split("\n")[:3]
        size, root = int(size_line), base64.b64decode(root_line)
        leaf_hashes: list[bytes] = []
        for index in range((size + 255) // 256):
            width = min(256, size - index * 256)
            hashes = await http.get(f"/310000/{tile(0, index, width)}")
            assert hashes.status_code == 200
            assert hashes.headers["content-type"] == "application/octet-stream"
            assert hashes.headers["cache-control"] == (
                "public, max-age=31536000, immutable" if width == 256 else "public, max-age=5"
            )
            assert len(hashes.content) == 32 * width
            bundle = (await http.get(f"/310000/{tile(0, index, width).replace('tile/0/', 'tile/entries/')}")).content
            entries, at = [], 0
            while at < len(bundle):
                length = int.from_bytes(bundle[at : at + 2], "big")
                entries.append(bundle[at + 2 : at + 2 + length])
                at += 2 + length
            assert len(entries) == width
            assert b"".join(sha256(b"\x00" + e) for e in entries) == hashes.content  # the envelopes are the leaves
            leaf_hashes += [hashes.content[i : i + 32] for i in range(0, len(hashes.content), 32)]
        assert mth(leaf_hashes) == root
        level_one = await http.get(f"/310000/{tile(1, 0, size // 256)}")
        assert level_one.content[:32] == mth(leaf_hashes[:256])
    assert federation.bundle_now().verify_checkpoint("310000", note).root == root


async def test_hash_tiles_are_public_but_entry_bundles_go_to_peers_only_and_every_answer_is_audited(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await serving_with_checkpoint(federation, tmp_path, rows=20)
    async with client(federation, node, PUBLIC) as http:
        assert (await http.get("/310000/tile/0/000.p/20")).status_code == 200
        refused = await http.get("/310000/tile/entries/000.p/20")
        assert refused.status_code == 403
        assert "only peers and operators" in refused.text
    rows = await audit_rows(node, "tiles.GET")
    assert [(r["caller"], r["role"], r["status"], r["detail"], r["answered"]) for r in rows[:1]] == [
        (PUBLIC, "public", "200", "/310000/tile/0/000.p/20", 640)
    ]

    async def refusal_audited() -> bool:
        return any(r["status"] == "403" for r in await audit_rows(node, "tiles.GET"))

    await eventually(refusal_audited)


async def test_a_caller_asking_for_what_is_not_there_in_a_loop_costs_the_trail_a_few_rows_a_second_each_call_counted(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await serving_with_checkpoint(federation, tmp_path, rows=20)
    started = time.monotonic()
    async with client(federation, node, PUBLIC) as http:
        share = asyncio.Semaphore(8)

        async def one(n: int) -> int:
            async with share:
                return (await http.get(f"/310000/tile/0/{n:03d}")).status_code

        answers = await asyncio.gather(*(one(n) for n in range(1, 201)))
    periods = math.ceil((time.monotonic() - started) / refusals.SUMMARY_SECONDS) + 1
    assert answers == [404] * 200

    rows = await eventually(lambda: calls_audited(node, "tiles.GET", Counter({(PUBLIC, "404"): 200})))
    assert sum(r["calls"] for r in rows) == 200
    assert len(rows) <= periods * (refusals.REFUSAL_ROWS + 1) < 200
    assert all(r["detail"].startswith("/310000/tile/0/") for r in rows if r["calls"] == 1)  # what was asked
    summed = [r for r in rows if r["calls"] > 1]
    assert summed and all(r["detail"].startswith(f"{r['calls']} calls refused in") for r in summed)


async def test_what_the_tiles_do_not_hold_or_the_spec_does_not_name_is_refused_plainly(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await serving_with_checkpoint(federation, tmp_path, rows=20)
    async with client(federation, node, "320000") as http:
        for path, status in [
            ("/310000/tile/0/000", 404),  # not full yet
            ("/310000/tile/0/000.p/21", 404),  # wider than the log holds... unless more came in
            ("/310000/tile/entries/001.p/1", 404),
            ("/310000/tile/1/000.p/1", 404),
            ("/310000/tile/0/x000/000.p/3", 404),  # not the spec's one encoding
            ("/310000/tile/0/000.p/256", 404),
            ("/999999/checkpoint", 404),
            ("/330000/checkpoint", 404),  # a member whose log this node does not hold yet
            ("/", 404),
        ]:
            answer = await http.get(path)
            assert (path, answer.status_code) == (path, status)
        assert (await http.post("/310000/checkpoint", content=b"x")).status_code == 405
        head = await http.head("/310000/tile/0/000.p/5")
        assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == "160"
        assert (await http.get("/310000/tile/0/000.p/5")).content == (await http.get("/310000/tile/0/000.p/6")).content[
            :160
        ]  # a narrower partial tile is a prefix of a wider one


async def test_a_hostile_connection_is_closed_without_disturbing_other_callers(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await serving_with_checkpoint(federation, tmp_path, rows=5)
    assert node.tiles is not None
    context = ssl.create_default_context(cafile=federation.layout.ca_dir / "ca.crt")
    member = federation.layout.member_dir("320000") / "tls"
    context.load_cert_chain(member / "node.crt", member / "node.key")
    reader, writer = await asyncio.open_connection("127.0.0.1", node.tiles.port, ssl=context)
    writer.write(b"GET /310000/checkpoint HTTP/1.1\r\nHost: x\r\n" + b"X-Junk: " + b"a" * 70_000 + b"\r\n\r\n")
    await writer.drain()
    reply = await reader.read()  # a head over h11's limit: an error status, then the connection is closed
    assert reply.startswith(b"HTTP/1.1 431 ")
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", node.tiles.port, ssl=context)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 400 ")
    writer.close()
    async with client(federation, node, "320000") as http:
        assert (await http.get("/310000/checkpoint")).status_code == 200


async def test_a_caller_dribbling_a_request_is_cut_off_however_often_it_sends_a_byte(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await serving_with_checkpoint(federation, tmp_path, rows=1)
    assert node.tiles is not None
    node.tiles.request_seconds = 0.5  # the whole head must come within this, not each byte
    context = ssl.create_default_context(cafile=federation.layout.ca_dir / "ca.crt")
    member = federation.layout.member_dir("320000") / "tls"
    context.load_cert_chain(member / "node.crt", member / "node.key")
    reader, writer = await asyncio.open_connection("127.0.0.1", node.tiles.port, ssl=context)
    head = b"GET /310000/checkpoint HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    sent = 0
    for byte in head:  # 0.1 s a byte: 100 s for the head, far past the server's limit
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            break
        sent += 1
        if reader.at_eof():
            break
        await asyncio.sleep(0.1)
        with contextlib.suppress(TimeoutError):
            if await asyncio.wait_for(reader.read(1), 0.01) == b"":
                break
    assert sent < len(head), "the server kept reading a request dribbled over 100 seconds"
    writer.close()


async def test_without_a_client_certificate_the_tls_tile_server_refuses_the_handshake(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await serving_with_checkpoint(federation, tmp_path, rows=1)
    assert node.tiles is not None
    context = ssl.create_default_context(cafile=federation.layout.ca_dir / "ca.crt")
    async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{node.tiles.port}", verify=context) as http:
        try:
            answer = await http.get("/310000/checkpoint")
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
            return
        raise AssertionError(f"answered {answer.status_code} without a client certificate")


async def credex(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "credex.node.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_credex_audit_over_http_checks_a_log_from_its_tiles_and_names_a_tampered_tile(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await serving_with_checkpoint(federation, tmp_path, rows=300)
    assert node.tiles is not None and node.pool is not None
    size = (await node.keeper.latest("310000") or pytest.fail("no checkpoint")).size
    endpoint = f"127.0.0.1:{node.tiles.port}"
    auditor = ["--config", str(federation.layout.config_path("320000"))]  # a peer's trust bundle and certificate
    state = tmp_path / "audited.json"
    code, out = await credex(
        "audit", "--over", "http", "--node", endpoint, "--origin", "310000", *auditor, "--state", str(state)
    )
    assert code == 0, out
    assert f"OK 310000 size {size}" in " ".join(out.split())
    assert "every hash tile agrees with the events" in out
    async with node.pool.acquire() as conn:  # the node's tiles no longer match its events
        await conn.execute(
            "UPDATE log_tiles SET hashes = overlay(hashes placing $1 from 33 for 32)"
            " WHERE origin = '310000' AND level = 0 AND idx = 0",
            bytes(32),
        )
    # The node keeps committed tiles in memory (they never change); a store changed under it shows once
    # that memory is gone, as after a restart.
    node.logbook.cache = TileCache()
    code, out = await credex("audit", "--over", "http", "--node", endpoint, "--origin", "310000", *auditor)
    assert code == 1, out
    assert "hash tile tile/0/000 disagrees with the events" in " ".join(out.split())


async def test_a_tile_served_once_is_served_from_memory_at_any_width_it_covers_and_no_wider(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await serving_with_checkpoint(federation, tmp_path, rows=300)
    assert node.pool is not None
    async with node.pool.acquire() as conn:
        size = await tiles.tiled_size(conn, "310000")
    assert 256 + 40 < size < 512
    async with client(federation, node, "320000") as http:
        full = (await http.get(f"/310000/{tile(0, 0, 256)}")).content
        edge = (await http.get(f"/310000/{tile(0, 1, size - 256)}")).content
        assert len(full) == 256 * 32 and len(edge) == (size - 256) * 32
        async with node.pool.acquire() as conn:  # a store changed under the node: what it served stays served
            await conn.execute(
                "UPDATE log_tiles SET hashes = overlay(hashes placing $1 from 1 for 32)"
                " WHERE origin = '310000' AND level = 0",
                bytes(32),
            )
        assert (await http.get(f"/310000/{tile(0, 0, 256)}")).content == full
        assert (await http.get(f"/310000/{tile(0, 0, 10)}")).content == full[: 32 * 10]  # a prefix of a full tile
        assert (await http.get(f"/310000/{tile(0, 1, 40)}")).content == edge[: 32 * 40]
        wider = await http.get(f"/310000/{tile(0, 1, size - 255)}")  # not held that wide: the store lacks it
        assert wider.status_code == 404
    rows = await audit_rows(node, "tiles.GET")
    assert sum(1 for row in rows if row["status"] == "200") == 5  # each answer from memory is audited too


async def test_a_tile_port_in_use_stops_the_start_with_what_to_change(federation: TestFederation) -> None:
    import socket

    from credex.node.services.server import ServerError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerError, match=f"cannot listen on '127.0.0.1:{port}'.*set tiles_listen"):
            await federation.start_node("310000", tiles_listen=f"127.0.0.1:{port}")


async def test_an_empty_tiles_listen_serves_no_tiles(federation: TestFederation) -> None:
    node = await federation.start_node("310000", tiles_listen="")
    assert node.tiles is None and node.port


async def test_without_tls_the_tile_server_is_plain_http_on_loopback_and_anonymous_callers_are_public(
    tmp_path: Path, postgres: EmbeddedPostgres, broker: EmbeddedBroker
) -> None:
    plain = TestFederation(tmp_path / "plain", ["310000", "320000"], postgres, broker)
    plain.tls = False
    plain.prepare()
    try:
        node, _ = await serve_sample(plain, tmp_path, rows=3)
        assert node.tiles is not None
        assert node.tiles.host == "127.0.0.1"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.tiles.port}") as http:
            assert (await http.get("/310000/tile/0/000.p/3")).status_code == 200
            assert (await http.get("/310000/tile/entries/000.p/3")).status_code == 403
        rows = await audit_rows(node, "tiles.GET")
        assert rows[0]["caller"] == "anonymous@127.0.0.1" and rows[0]["role"] == "public"
    finally:
        await plain.stop()


async def test_an_envelope_too_long_for_a_uint16_length_is_never_signed_and_one_held_from_before_is_named(
    federation: TestFederation, tmp_path: Path
) -> None:
    node = await federation.start_node("310000")
    assert node.pool is not None
    record = record_pb2.Record(
        record_id="310000-XK-long",
        origin="310000",
        kind=record_pb2.KIND_LICENCE,
        subject=FORGED_SUBJECT,
        licence=record_pb2.LicenceDetails(content="许" * 30_000),  # 90,000 bytes of UTF-8
    )
    async with node.pool.acquire() as conn, conn.transaction():
        result = await node.ledger.append(conn, [Change.of(record)])
    assert result.seqs == []
    assert [exc.size > MAX_ENTRY for _, exc in result.too_large] == [True]
    async with client(federation, node, "320000") as http:
        assert (await http.get("/310000/tile/0/000.p/1")).status_code == 404  # nothing was logged

    # A log that holds one already (signed before credex kept to the limit) names it instead of cutting it.
    async with node.pool.acquire() as conn, conn.transaction():
        await node.ledger._lock_head(conn)
        active = lookup_pb2.ENTRY_STATUS_ACTIVE
        event = node.ledger._sign(
            1, event_pb2.EVENT_TYPE_UPSERT, Change.of(record), _Clock(), standing=active, disputed=False, limit=2**31
        )
        await node.ledger._store(conn, [event], 1)
    async with client(federation, node, "320000") as http:
        assert (await http.get("/310000/tile/0/000.p/1")).status_code == 200  # its hash is served
        answer = await http.get("/310000/tile/entries/000.p/1")
    assert answer.status_code == 501
    assert answer.headers["credex-oversize-seq"] == "1"
    assert "310000's entry at seq 1 is" in answer.text and "fetch the entry over gRPC FetchEvents" in answer.text
